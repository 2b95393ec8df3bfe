"""Registered methods. Importing this package registers every built-in method."""

from fieldforge.apps.methods import radiance, splat  # noqa: F401  (registers nerf, ngp, splat)
from fieldforge.apps.methods.base import METHODS, Method, MethodConfig, get_method, register

__all__ = ["METHODS", "Method", "MethodConfig", "get_method", "register"]
