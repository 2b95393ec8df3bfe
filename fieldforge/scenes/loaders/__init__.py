"""Dataset loaders: one module per on-disk format, each with ``detect(path) -> bool`` and
``load(path, downscale) -> Scene``. All return cameras in OpenCV axes with pixel centres at
+0.5 (see :mod:`fieldforge.scenes.cameras`) and uint8 images.

``FORMATS`` maps each format name to a one-line description, in detection order.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fieldforge.errors import DataError, FieldforgeError
from fieldforge.scenes.scene import Scene

FORMATS: dict[str, str] = {
    "blender": "NeRF-synthetic / D-NeRF: transforms_{train,val,test}.json (+ per-frame time)",
    "nerfstudio": "instant-ngp / nerfstudio: one transforms.json",
    "llff": "LLFF forward-facing: poses_bounds.npy + images[_K]/",
    "dtu": "IDR / NeuS / MonoSDF: cameras.npz (or cameras_sphere.npz) + images",
    "colmap": "COLMAP sparse model: sparse/0 or sparse/ with cameras, images, points3D (.bin or .txt)",
    "npz": "tiny-NeRF style single .npz: images, poses (OpenGL c2w), focal",
}


def _module(name: str):
    return importlib.import_module(f"fieldforge.scenes.loaders.{name}")


def detect_format(path: str | Path) -> str:
    """Name of the format of the dataset at ``path`` (a folder, or an .npz file)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "dataset not found")
    for name in FORMATS:
        if _module(name).detect(path):
            return name
    raise DataError(path, f"unknown dataset format (none of: {', '.join(FORMATS)})")


def load(path: str | Path, format: str | None = None, downscale: int = 1) -> Scene:
    """Load a dataset; ``format`` forces one of :data:`FORMATS`; images and intrinsics are
    area-downscaled by the integer ``downscale``."""
    if format is not None and format not in FORMATS:
        raise FieldforgeError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise FieldforgeError(f"downscale must be an integer >= 1, got {downscale!r}")
    path = Path(path)
    name = format or detect_format(path)
    if not path.exists():
        raise DataError(path, "dataset not found")
    return _module(name).load(path, downscale)


__all__ = ["FORMATS", "detect_format", "load"]
