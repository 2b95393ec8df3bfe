"""Exact integrals of a CPWL network over 1-D intervals, 2-D rectangles and convex polygons, and
3-D boxes: sum(volume_k * g(centroid_k)) over its linear pieces, exact because g is affine on
each piece; the gradient with respect to the weights is exact because g is continuous (the
boundary terms cancel)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.fields.piecewise.layers import as_layers
from fieldforge.fields.piecewise.rays import integrate_rays
from fieldforge.fields.piecewise.regions import box_bounds, polygon_regions, regions


def integrate(net: nn.Module, lo, hi, condition: Tensor | None = None, max_regions: int = 100_000,
              chunk: int = 256) -> Tensor:
    """Exact integral of the network over the box [lo, hi] (1, 2 or 3-D) -> [n_out], or
    [B, n_out] with ``condition`` [B, k] (extra inputs constant over the box), processed
    ``chunk`` domains at a time (``max_regions`` applies per chunk)."""
    lo, hi = box_bounds(lo, hi)
    layers = as_layers(net)
    if lo.numel() == 1:
        if condition is not None:
            raise ValueError("condition is only supported for 2-D and 3-D boxes")
        one = torch.ones(1, 1, dtype=torch.float64)
        return integrate_rays(layers, lo[None], one, 0.0, float(hi - lo), max_pieces=max_regions)[0]
    if condition is None:
        return regions(layers, lo, hi, None, max_regions).integral(layers)
    return torch.cat([regions(layers, lo, hi, cond, max_regions).integral(layers, cond)
                      for cond in condition.split(chunk)])


def integrate_polygon(net: nn.Module, polygon: Tensor, condition: Tensor | None = None,
                      max_regions: int = 100_000) -> Tensor:
    """Exact integral over a convex polygon (vertices [V, 2], counter-clockwise) -> [n_out]."""
    poly = torch.as_tensor(polygon, dtype=torch.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
        raise ValueError(f"polygon must be [V >= 3, 2]; got {tuple(poly.shape)}")
    layers = as_layers(net)
    cond = None if condition is None else condition.reshape(1, -1)
    reg = polygon_regions(layers, poly[None], cond, max_regions)
    out = reg.integral(layers, cond)
    return out[0] if condition is None else out
