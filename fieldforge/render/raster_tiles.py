"""Tile binning: which Gaussians touch which screen tiles, sorted front to back per tile.

Tiles are ``tile_size`` x ``tile_size`` pixel squares in row-major order (tile id =
ty * tiles_x + tx). A Gaussian with centre m and radii r (pixels, per axis) covers tiles
floor((m - r) / tile_size) .. ceil((m + r) / tile_size) - 1 per axis, clamped to the grid
(gsplat's ``isect_tiles``). Within a tile, Gaussians are ordered by camera-space depth of the
centre (ties by index), the global per-tile order of gsplat's radix sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fieldforge import kernels


@dataclass
class TileBins:
    """Flat, sorted (tile, Gaussian) intersection list of one image."""

    tiles_x: int
    tiles_y: int
    tile_size: int
    offsets: Tensor  # [tiles_x * tiles_y + 1] int64: tile t's Gaussians are ids[offsets[t]:offsets[t+1]]
    ids: Tensor  # [n_isects] int64, indices into the Gaussians given to :func:`bin_tiles`

    @property
    def counts(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]


def _check(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int) -> None:
    n = means2d.shape[0] if means2d.ndim == 2 else -1
    for name, t, shape in (("means2d", means2d, (n, 2)), ("radii", radii, (n, 2)), ("depths", depths, (n,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"bin_tiles: {name} must be {list(shape)} (means2d [N, 2]), got {list(t.shape)}")
    if int(tile_size) < 1 or int(width) < 1 or int(height) < 1:
        raise ValueError(f"bin_tiles: tile_size, width and height must be positive, got {tile_size}, {width}, {height}")


@torch.no_grad()
def bin_tiles(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int = 16) -> TileBins:
    """Bin N Gaussians (``means2d`` [N, 2], integer ``radii`` [N, 2], ``depths`` [N]) into tiles.

    Gaussians with a zero radius are skipped. One argsort of the combined key
    tile * N + depth_rank gives the (tile, depth) order. On CPU tensors the fast path
    (:mod:`fieldforge.kernels.tiles`) gives the same bins.
    """
    _check(means2d, radii, depths, width, height, tile_size)
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    if kernels.enabled(means2d, radii, depths):
        try:
            from fieldforge.kernels import tiles

            offsets, ids = tiles.bin_tiles(means2d, radii, depths, tiles_x, tiles_y, tile_size)
            return TileBins(tiles_x, tiles_y, tile_size, offsets, ids)
        except kernels.Unavailable:
            pass
    n = means2d.shape[0]
    dev = means2d.device
    m, r = means2d.detach().float(), radii.float()
    lo = torch.floor((m - r) / tile_size).long()
    hi = torch.ceil((m + r) / tile_size).long()
    lim = torch.tensor([tiles_x, tiles_y], device=dev)
    lo = torch.minimum(lo.clamp_min(0), lim)
    hi = torch.minimum(hi.clamp_min(0), lim)
    span = (hi - lo) * (radii > 0).all(-1, keepdim=True)
    count = span[:, 0] * span[:, 1]
    gid = torch.repeat_interleave(torch.arange(n, device=dev), count)
    local = torch.arange(gid.numel(), device=dev) - (torch.cumsum(count, 0) - count)[gid]
    sx = span[gid, 0]
    tile = (lo[gid, 1] + local // sx) * tiles_x + lo[gid, 0] + local % sx
    rank = torch.empty(n, dtype=torch.long, device=dev)
    rank[torch.argsort(depths.detach(), stable=True)] = torch.arange(n, device=dev)
    order = torch.argsort(tile * max(n, 1) + rank[gid])
    counts = torch.bincount(tile, minlength=tiles_x * tiles_y)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return TileBins(tiles_x, tiles_y, tile_size, offsets, gid[order])
