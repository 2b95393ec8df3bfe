"""Training methods and their registry (:mod:`fieldforge.apps.methods.registry`)."""

from fieldforge.apps.methods.base import Method, MethodConfig
from fieldforge.apps.methods.registry import get_method, method_names

__all__ = ["Method", "MethodConfig", "get_method", "method_names"]
