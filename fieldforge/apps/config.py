"""Typed run configuration, saved with every run as ``RUN/config.json`` and re-loadable.

``config.json`` = {"fieldforge": version, "train": TrainConfig fields, "method": the method's
Config fields}. ``--set key=value`` on the command line overrides method options; values are
parsed with the type of the dataclass field (bool: true/false/1/0; tuples: comma lists).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any

from fieldforge import __version__
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


def from_dict(cls: type, values: dict, source: Path | str = "config") -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise DataError(source, f"unknown keys for {cls.__name__}: {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    fixed = {k: tuple(v) if typing.get_origin(hints[k]) is tuple and isinstance(v, list) else v
             for k, v in values.items()}
    return cls(**fixed)


def save_config(path: Path, train: TrainConfig, method_cfg: Any) -> None:
    """Write ``config.json`` atomically (a temporary file in the same folder, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"fieldforge": __version__, "train": to_dict(train),
                                   "method": to_dict(method_cfg)}, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
