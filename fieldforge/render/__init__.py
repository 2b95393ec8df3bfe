"""Rendering: occupancy-grid marching, volume compositing and the Gaussian rasterizer.

``fieldforge.render.rasterize`` is the rasterizer's one entry point, in gsplat's argument
convention (see :mod:`fieldforge.render.rasterize` for the conventions).
"""

from fieldforge.render.rasterize import rasterize, render_gaussians

__all__ = ["rasterize", "render_gaussians"]
