"""The one rule for every file or folder a verb writes: never over an existing output without
``force``, never half written, nothing left behind on failure.

:func:`staged` hands out a temporary sibling of the output (same suffix, so writers that pick a
format from it still do); when the block succeeds it takes the output's name (a file atomically;
a folder, or a file replacing a folder, by moving the old one aside first and deleting it after),
and when the block fails it is deleted, with any parent folders :func:`staged` created.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fieldforge.errors import FieldforgeError


def refuse_existing(out: Path, force: bool) -> None:
    """Raise when ``out`` exists (a file, or a folder that is not empty) and ``force`` is not set."""
    if force or not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    raise FieldforgeError(f"{out}: already exists (pass --force to overwrite)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def staged(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write ``out`` to (a file or a folder: the block creates it);
    see the module docstring. An existing ``out`` is refused unless ``force``."""
    out = Path(out)
    refuse_existing(out, force)
    created = [p for p in out.parents if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FieldforgeError(f"{out.parent}: cannot create the output folder: {e.strerror or e}") from None
    tmp = out.with_name(f".{out.stem}.part{os.getpid()}{out.suffix}")
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    _remove(tmp)
    done = False
    try:
        yield tmp
        if not tmp.exists():
            raise FieldforgeError(f"{out}: nothing was written")
        if out.exists() and (out.is_dir() or tmp.is_dir()):
            os.replace(out, old)
        os.replace(tmp, out)
        done = True
    finally:
        _remove(tmp)
        _remove(old)
        if not done:
            for p in created:  # innermost first
                try:
                    p.rmdir()
                except OSError:
                    break


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` (replacing it) through :func:`staged`."""
    with staged(path, force=True) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
