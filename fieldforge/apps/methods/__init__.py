"""Registered methods. Importing this package registers every built-in method."""

from fieldforge.apps.methods import dynamic_splat, kilonerf, radiance, splat  # noqa: F401  (registers every method)
from fieldforge.apps.methods.base import METHODS, Method, MethodConfig, get_method, register

__all__ = ["METHODS", "Method", "MethodConfig", "get_method", "register"]
