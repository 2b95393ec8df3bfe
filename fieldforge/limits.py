"""Size limits on what users hand in, checked before anything is allocated.

A camera path has at most :data:`MAX_FRAMES` frames, and an image (loaded, or rendered by any
verb) at most :data:`MAX_PIXELS` pixels. Allocations that grow with user input are also checked
against the memory the system has available (:func:`check_memory`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fieldforge.errors import DataError, FieldforgeError

MAX_FRAMES = 100_000
MAX_PIXELS = 8192 * 8192
#: bytes held per pixel while rendering one image (rays, per-chunk samples, outputs): a bound
#: above the peaks of ngp and splat at 65,536-ray chunks
RENDER_BYTES_PER_PIXEL = 128


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; elsewhere the free
    physical pages), or None when the system does not say."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: float, what: str, source: str | Path | None = None) -> None:
    """Refuse (``DataError`` naming ``source``, else ``FieldforgeError``) an allocation of
    ``nbytes`` for ``what`` that exceeds the available memory."""
    free = available_memory()
    if free is not None and nbytes > free:
        msg = f"{what} needs about {nbytes / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB available"
        raise DataError(source, msg) if source is not None else FieldforgeError(msg)


def check_image_size(width: int, height: int, what: str, source: str | Path | None = None) -> None:
    """Refuse an image of ``width`` x ``height`` beyond :data:`MAX_PIXELS` or the memory that
    rendering it takes."""
    if width * height > MAX_PIXELS:
        msg = f"{what} of {width}x{height} pixels is larger than the limit of {MAX_PIXELS:,} pixels"
        raise DataError(source, msg) if source is not None else FieldforgeError(msg)
    check_memory(width * height * RENDER_BYTES_PER_PIXEL, f"{what} of {width}x{height} pixels", source)
