"""Scenes: cameras, images, splits and the loaders that read datasets from disk."""

from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.loaders import FORMATS, detect_format, load
from fieldforge.scenes.scene import Scene, background_rgb

__all__ = ["Cameras", "Scene", "load", "detect_format", "FORMATS", "background_rgb"]
