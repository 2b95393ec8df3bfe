"""The method registry: one table from ``--method`` names to the classes that implement them.

Built-in methods are listed in :data:`BUILTIN` as ``module:Class`` and imported when first
asked for (so ``fieldforge --help`` imports none of them). Other packages add methods through
the ``fieldforge.methods`` entry-point group (``name = "package.module:Class"``), read once;
a built-in name cannot be replaced.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from fieldforge.apps.training.methods.base import Method
from fieldforge.errors import FieldforgeError

BUILTIN: dict[str, str] = {
    "ngp": "fieldforge.apps.training.methods.radiance:NGPMethod",
    "nerf": "fieldforge.apps.training.methods.radiance:NeRFMethod",
    "rbf": "fieldforge.apps.training.methods.radiance:RBFMethod",
    "cam": "fieldforge.apps.training.methods.radiance:CAMMethod",
    "resfields-nerf": "fieldforge.apps.training.methods.radiance:ResFieldsNeRFMethod",
    "kilonerf": "fieldforge.apps.training.methods.kilonerf:KiloNeRFMethod",
    "splat": "fieldforge.apps.training.methods.splat:SplatMethod",
    "dynamic-splat": "fieldforge.apps.training.methods.dynamic_splat:DynamicSplatMethod",
}
ENTRY_POINT_GROUP = "fieldforge.methods"
_plugins: dict[str, str] | None = None


def _table() -> dict[str, str]:
    global _plugins
    if _plugins is None:
        _plugins = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}
    return {**BUILTIN, **_plugins}


def method_names() -> list[str]:
    """Every registered method name, built-ins first."""
    return list(_table())


def get_method(name: str) -> type[Method]:
    """The class of ``--method name``; an unknown name is refused on one line."""
    table = _table()
    if name not in table:
        raise FieldforgeError(f"unknown method {name!r}; available: {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Method) and cls.name == name):
        raise FieldforgeError(f"method {name!r}: {table[name]} is not a Method named {name!r}")
    return cls


def field_methods() -> list[str]:
    """The registered methods that train a radiance field (the ones a teacher can come from)."""
    from fieldforge.apps.training.methods.radiance import RadianceMethod

    return [n for n in method_names() if issubclass(get_method(n), RadianceMethod)]
