"""Checkpoints: written atomically, read without unpickling.

A checkpoint is a ``torch.save`` of plain containers (dicts, lists, tensors, numbers,
strings). It is read with ``torch.load(weights_only=True)``, which refuses any pickled
object, so a crafted file cannot execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fieldforge.apps.training.files import staged
from fieldforge.errors import DataError


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    with staged(path, force=True) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def load_safe(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; a pickle payload or a damaged file is refused."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"not a safe fieldforge checkpoint ({first[:160]})") from None


def load_method_state(method: Any, state: dict, path: str | Path) -> None:
    """``method.load_state_dict(state["method"])``; a checkpoint written by another method (its
    ``method_name``), or whose state does not fit this one, is refused on one line."""
    name = state.get("method_name")
    if name is not None and name != method.name:
        raise DataError(path, f"checkpoint is of method {name!r}, not {method.name!r} as the run's config says")
    if "method" not in state:
        raise DataError(path, "checkpoint has no 'method' state")
    try:
        method.load_state_dict(state["method"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(path, f"checkpoint does not fit method {method.name!r}: {first}") from None
