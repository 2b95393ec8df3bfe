"""fieldforge: neural fields and 3D Gaussian rendering in pure PyTorch.

Conventions used everywhere (see README "Conventions"):
- camera-to-world matrices are 4x4 in OpenCV axes (x right, y down, z forward);
  loaders convert OpenGL/Blender and LLFF poses on load;
- pixel (i, j) has its centre at (i + 0.5, j + 0.5), the top-left corner is (0, 0);
- time is a float in [0, 1];
- quaternions are wxyz; colours are linear floats in [0, 1].
"""

import os

# PyTorch's OpenMP threads (libgomp) busy-wait for GOMP_SPINCOUNT spins after each parallel
# operation (300,000 by default), holding the cores the numba kernels launched next need (the
# two use separate thread pools). libgomp reads the value once, when ``import torch`` loads it:
# this default applies when fieldforge is imported before torch (as by the ``fieldforge``
# command); a value already set wins. Effect measured in the README ("Fast CPU kernels").
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from fieldforge.errors import FieldforgeError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["FieldforgeError", "Run", "__version__", "train"]


def __getattr__(name: str):
    """``fieldforge.train`` and ``fieldforge.Run`` (:mod:`fieldforge.apps.api`), imported on first use."""
    if name in ("train", "Run"):
        from fieldforge.apps import api

        return getattr(api, name)
    raise AttributeError(f"module 'fieldforge' has no attribute {name!r}")
