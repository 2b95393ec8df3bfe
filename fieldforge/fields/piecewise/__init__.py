"""Piecewise-linear analysis of ReLU-type MLPs, split by concern: canonical layers
(:mod:`~fieldforge.fields.piecewise.layers`), exact breakpoints and integrals along rays
(:mod:`~fieldforge.fields.piecewise.rays`), linear regions over boxes and polygons
(:mod:`~fieldforge.fields.piecewise.regions`), exact integrals over domains
(:mod:`~fieldforge.fields.piecewise.integrate`), and a radiance field built on them
(:mod:`~fieldforge.fields.piecewise.field`)."""

from fieldforge.fields.piecewise.field import PLField
from fieldforge.fields.piecewise.integrate import integrate, integrate_polygon
from fieldforge.fields.piecewise.layers import (PLMLP, NotPiecewiseLinearError, PLActivation, PLLayer, RegionLimitError,
                                                as_layers, evaluate, piecewise_linear_layers, single_thread)
from fieldforge.fields.piecewise.rays import integrate_rays, ray_breakpoints
from fieldforge.fields.piecewise.regions import Regions, regions

__all__ = ["PLField", "PLMLP", "NotPiecewiseLinearError", "PLActivation", "PLLayer", "RegionLimitError", "Regions",
           "as_layers", "evaluate", "integrate", "integrate_polygon", "integrate_rays", "piecewise_linear_layers",
           "ray_breakpoints", "regions", "single_thread"]
