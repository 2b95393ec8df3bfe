"""Scenes: cameras, rays, camera paths, images, splits and the loaders that read datasets from disk."""

from __future__ import annotations

from pathlib import Path

from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.scene import Scene, background_rgb


def load(path: str | Path, format: str | None = None, downscale: int = 1) -> Scene:
    """Load a dataset folder (format auto-detected unless given). See :mod:`fieldforge.scenes.loaders`."""
    from fieldforge.scenes.loaders import load as _load

    return _load(path, format=format, downscale=downscale)


__all__ = ["Cameras", "Scene", "load", "background_rgb"]
