"""Tile binning and per-tile depth sort of projected Gaussians (fast path of
:func:`fieldforge.render.raster_tiles.bin_tiles`).

Same result as the reference: tiles of ``tile_size`` pixels in row-major order; a Gaussian with
centre m and integer radii r (pixels, per axis; 0 = culled) covers tiles
floor((m - r) / tile_size) .. ceil((m + r) / tile_size) - 1 per axis, clamped to the grid; each
tile lists its Gaussians by camera depth, ties by index (the order of gsplat's radix sort, see
"gsplat: An Open-Source Library for Gaussian Splatting", arXiv:2409.06765, and "3D Gaussian
Splatting for Real-Time Radiance Field Rendering", arXiv:2308.04079).

Method: one stable depth argsort (a radix sort), then a counting sort by tile that keeps the
depth order. Serial: it is linear in the number of Gaussians and intersections, a small share
of the blending cost, and a parallel region costs more than it saves.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fieldforge import kernels
from fieldforge.kernels._jit import jit


@jit
def _depth_order(depths):
    """Stable ascending argsort of float32 ``depths`` (ties by index): LSD radix sort, four 8-bit
    passes over the order-preserving integer image of the floats (-0 counts as +0)."""
    n = depths.size
    bits = depths.view(np.uint32)
    keys = np.empty(n, np.uint32)
    for i in range(n):
        b = bits[i] if bits[i] != np.uint32(0x80000000) else np.uint32(0)
        keys[i] = ~b if b >> np.uint32(31) else b | np.uint32(0x80000000)
    order, other = np.arange(n), np.empty(n, np.int64)
    count = np.empty(257, np.int64)
    for shift in range(0, 32, 8):
        count[:] = 0
        for i in range(n):
            count[((keys[i] >> np.uint32(shift)) & np.uint32(255)) + 1] += 1
        for v in range(256):
            count[v + 1] += count[v]
        for j in range(n):
            i = order[j]
            v = (keys[i] >> np.uint32(shift)) & np.uint32(255)
            other[count[v]] = i
            count[v] += 1
        order, other = other, order
    return order


@jit
def _tile_ranges(means2d, radii, tile_size, tiles_x, tiles_y):
    """rect[i] = (x0, y0, x1, y1): Gaussian i's half-open tile range (empty when culled), and
    counts[t]: the number of Gaussians on tile t."""
    ts = np.float32(tile_size)
    rect = np.zeros((means2d.shape[0], 4), np.int64)
    counts = np.zeros(tiles_x * tiles_y, np.int64)
    for i in range(means2d.shape[0]):
        if radii[i, 0] <= 0 or radii[i, 1] <= 0:
            continue
        for a in range(2):
            lim = tiles_x if a == 0 else tiles_y
            r = np.float32(radii[i, a])
            rect[i, a] = min(max(np.int64(np.floor((means2d[i, a] - r) / ts)), 0), lim)
            rect[i, 2 + a] = min(max(np.int64(np.ceil((means2d[i, a] + r) / ts)), 0), lim)
        for ty in range(rect[i, 1], rect[i, 3]):
            for tx in range(rect[i, 0], rect[i, 2]):
                counts[ty * tiles_x + tx] += 1
    return rect, counts


@jit
def _fill(order, rect, tiles_x, offsets, ids):
    """Counting sort by tile: the Gaussians, visited in depth order, are appended to their tiles."""
    cursor = offsets[:-1].copy()
    for i in order:
        for ty in range(rect[i, 1], rect[i, 3]):
            for tx in range(rect[i, 0], rect[i, 2]):
                t = ty * tiles_x + tx
                ids[cursor[t]] = i
                cursor[t] += 1


def bin_tiles(means2d: Tensor, radii: Tensor, depths: Tensor, tiles_x: int, tiles_y: int,
              tile_size: int) -> tuple[Tensor, Tensor]:
    """Sorted intersections of N Gaussians (``means2d`` [N, 2] pixels, integer ``radii`` [N, 2],
    camera ``depths`` [N]) with a ``tiles_x`` x ``tiles_y`` grid: ``offsets`` [tiles + 1] and
    ``ids`` [n_isects], both int64, as :class:`~fieldforge.render.raster_tiles.TileBins` holds them."""
    name = "bin_tiles"
    m = kernels.as_array(means2d, torch.float32, "means2d", name)
    r = kernels.as_array(radii, torch.int32, "radii", name)
    order = kernels.call(_depth_order, kernels.as_array(depths, torch.float32, "depths", name))
    rect, counts = kernels.call(_tile_ranges, m, r, tile_size, tiles_x, tiles_y)
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64)
    torch.cumsum(torch.from_numpy(counts), 0, out=offsets[1:])
    ids = torch.empty(int(offsets[-1]), dtype=torch.int64)
    kernels.call(_fill, order, rect, tiles_x, offsets.numpy(), ids.numpy())
    return offsets, ids
