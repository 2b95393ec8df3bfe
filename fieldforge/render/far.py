"""Samples beyond the occupancy grid's box, for unbounded scenes whose field covers all of space
(a contracted field, :mod:`fieldforge.fields.contraction`).

The grid's box is the foreground; past the point where a ray leaves it (or from ``near``, when
the ray starts outside or misses it), ``n`` intervals tile [t0, far] evenly in inverse distance
(disparity), as mip-NeRF 360 ("Mip-NeRF 360: Unbounded Anti-Aliased Neural Radiance Fields",
arXiv:2111.12077) spaces its samples: that matches the contracted field's resolution, which also
falls off as 1 / distance. The last interval ends at ``far``. ``merge_packed`` joins them after a
ray's grid samples, keeping the packed layout (samples of a ray contiguous, front to back).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fieldforge.render.occupancy import ray_aabb_intersect
from fieldforge.scenes.rays import Rays


def far_samples(rays: Rays, aabb: Tensor, n: int, near: float, far: float) -> tuple[Tensor, Tensor, Tensor]:
    """Packed (ray_indices, t_starts, t_ends) of ``n`` disparity-spaced intervals per ray from the
    box exit (or ``near``) to ``far``; rays whose start is already at or past ``far`` get none."""
    o, d = rays.origins, rays.directions
    _, t_exit, hit = ray_aabb_intersect(o, d, aabb.reshape(6))
    t0 = torch.where(hit, t_exit, torch.zeros_like(t_exit)).clamp_min(max(near, 1e-6))
    keep = t0 < far
    rays_idx = torch.nonzero(keep)[:, 0]
    s = torch.linspace(0.0, 1.0, n + 1, device=o.device, dtype=o.dtype)
    inv0, inv1 = 1.0 / t0[rays_idx, None], 1.0 / far
    edges = 1.0 / (inv0 * (1.0 - s) + inv1 * s)  # [R, n + 1], from t0 to far
    edges[:, -1] = far
    ray_indices = rays_idx.repeat_interleave(n)
    return ray_indices, edges[:, :-1].reshape(-1), edges[:, 1:].reshape(-1)


def merge_packed(first: tuple[Tensor, Tensor, Tensor], then: tuple[Tensor, Tensor, Tensor], n_rays: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Packed samples of ``first`` followed, on each ray, by those of ``then`` (both packed, rays
    in [0, ``n_rays``)). Every sample is scattered to its place (ray offset + rank), in O(S)."""
    (ra, *_), (rb, *_) = first, then
    counts_a, counts_b = torch.bincount(ra, minlength=n_rays), torch.bincount(rb, minlength=n_rays)
    first_a, first_b = torch.cumsum(counts_a, 0) - counts_a, torch.cumsum(counts_b, 0) - counts_b
    start = first_a + first_b  # each ray's first merged slot
    pos_a = start[ra] + torch.arange(len(ra), device=ra.device) - first_a[ra]  # + the rank in its ray
    pos_b = (start + counts_a)[rb] + torch.arange(len(rb), device=rb.device) - first_b[rb]
    out = []
    for a, b in zip(first, then):
        merged = a.new_empty(len(a) + len(b))
        merged[pos_a], merged[pos_b] = a, b
        out.append(merged)
    return out[0], out[1], out[2]
