"""Typed run configuration, saved with every run as ``RUN/config.json`` and re-loadable.

``config.json`` = {"fieldforge": version, "train": TrainConfig fields, "method": the method's
Config fields}. ``--set key=value`` on the command line overrides method options; values are
parsed with the type of the dataclass field (bool: true/false/1/0; tuples: comma lists).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from fieldforge import __version__
from fieldforge.apps.training.files import write_atomic
from fieldforge.errors import DataError, FieldforgeError


@dataclasses.dataclass
class TrainConfig:
    data: str | None = None  # dataset folder; None = the bundled default scene
    format: str | None = None  # force a loader format
    method: str = "ngp"
    steps: int | None = None  # total steps of the run (None: the method's default)
    minutes: float | None = None  # wall-clock bound on training time
    plan: str = "steps"  # "steps": schedules span ``steps``; "minutes": planned for the budget (apps.plan)
    horizon: int | None = None  # a minutes plan's horizon when the run last stopped (for readers)
    seed: int = 0
    device: str = "auto"
    downscale: int = 1
    checkpoint_seconds: float = 60.0
    log_every: int = 25


def _parse_value(tp: Any, text: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        if text.lower() in ("none", "null"):
            return None
        return _parse_value(args[0], text, key)
    if origin is tuple:
        return tuple(_parse_value(args[0], t, key) for t in text.split(","))
    try:
        if tp is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if tp in (int, float, str):
            return tp(text)
    except ValueError:
        raise FieldforgeError(f"--set {key}={text}: expected {tp.__name__}") from None
    return json.loads(text)


def apply_overrides(cfg: Any, pairs: list[str]) -> Any:
    """Return ``cfg`` with ``key=value`` overrides applied (typed by the dataclass fields)."""
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for pair in pairs:
        if "=" not in pair:
            raise FieldforgeError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        if key not in hints:
            names = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise FieldforgeError(f"unknown option {key!r} for {type(cfg).__name__}; options: {names}")
        changes[key] = _parse_value(hints[key], text, key)
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _typed(tp: Any, value: Any) -> Any:
    """``value`` as the type hint ``tp`` asks (a JSON list for a tuple, an int for a float);
    raises TypeError when it is not of that type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _typed(a, value)
            except TypeError:
                pass
        raise TypeError
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        item = args[0] if args else Any
        return tuple(_typed(item, v) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    elif tp is str and not isinstance(value, str):
        raise TypeError
    return value


def from_dict(cls: type, values: dict, source: Path | str = "config") -> Any:
    """The dataclass ``cls`` from a config section; unknown keys and values of the wrong type are
    refused (``DataError`` naming ``source`` and the key)."""
    if not isinstance(values, dict):
        raise DataError(source, f"{cls.__name__} section must be a JSON object, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise DataError(source, f"unknown keys for {cls.__name__}: {', '.join(repr(k) for k in sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    fixed = {}
    for k, v in values.items():
        try:
            fixed[k] = _typed(hints[k], v)
        except TypeError:
            want = getattr(hints[k], "__name__", None) or str(hints[k]).replace("typing.", "")
            raise DataError(source, f"{cls.__name__}.{k} must be {want}, got {json.dumps(v)}") from None
    return cls(**fixed)


def save_config(path: Path, train: TrainConfig, method_cfg: Any) -> None:
    """Write ``config.json`` atomically (:func:`fieldforge.apps.training.files.write_atomic`)."""
    write_atomic(path, json.dumps({"fieldforge": __version__, "train": to_dict(train),
                                   "method": to_dict(method_cfg)}, indent=2) + "\n")


def read_config(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "no config.json: not a fieldforge run directory")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"malformed JSON ({e})") from None
    if not isinstance(data, dict) or "train" not in data or "method" not in data:
        raise DataError(path, "missing 'train' or 'method' section")
    return data
