"""Training methods and their registry (:mod:`fieldforge.apps.training.methods.registry`)."""

from fieldforge.apps.training.methods.base import Method, MethodConfig
from fieldforge.apps.training.methods.registry import get_method, method_names

__all__ = ["Method", "MethodConfig", "get_method", "method_names"]
