"""fieldforge: neural fields and 3D Gaussian rendering in pure PyTorch.

Conventions used everywhere (see README "Conventions"):
- camera-to-world matrices are 4x4 in OpenCV axes (x right, y down, z forward);
  loaders convert OpenGL/Blender and LLFF poses on load;
- pixel (i, j) has its centre at (i + 0.5, j + 0.5), the top-left corner is (0, 0);
- time is a float in [0, 1];
- quaternions are wxyz; colours are linear floats in [0, 1].
"""

from fieldforge.errors import FieldforgeError

__version__ = "0.1.0"
__all__ = ["FieldforgeError", "__version__"]
