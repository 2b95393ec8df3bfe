"""Occupancy-grid traversal to packed samples: the fast path of
:meth:`fieldforge.render.occupancy.OccupancyGrid.sample` (nerfacc's ``traverse_grids`` for
``cone_angle = 0``; "Nerfacc: Efficient Sampling Accelerates NeRFs", arXiv:2305.04966).

One thread per ray walks the lattice ``t_k = near_p + k dt`` (``k`` from ``k0`` for ``count``
steps, both computed by the caller) and keeps a sample when its midpoint, computed with the
reference's float32 formulas, lies in an occupied cell of the finest level containing it; so the
kept ``t_starts`` equal the reference bit for bit. Empty space is skipped block by block (a DDA
over an occupancy pyramid of aligned blocks of 16, 4 and 1 cells per side): from a sample in an
empty cell the walk jumps to the first lattice midpoint that may leave the largest empty block
holding it, shrunk by a float32 error bound (or, on levels >= 1, enter the next finer level's box
grown by it), so every skipped sample provably classifies into that empty block. Two passes
(count per ray, offsets, fill) produce the packed output without over-allocation; rays write
disjoint ranges, so the result does not depend on the thread count. The same walk, resumed from
a lattice step kept per ray, gives the next few samples of some rays (:meth:`Lattice.advance`):
a renderer that marches in passes finds a ray's samples only up to where it terminates.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange
from torch import Tensor

from fieldforge import kernels
from fieldforge.kernels._jit import jit, pjit

_REL_ERR = 1e-5  # float32 error bound of a sample's cell coordinates, relative to coordinate magnitudes
BLOCK = 4  # cells per side of the finer empty-space blocks (the coarser ones have BLOCK**2)


@jit
def _classify(x0, x1, x2, lo, size, levels, res):
    """Reference ``OccupancyGrid.occupied`` in float32: (level, cell x, y, z, inside the grid)."""
    half = np.float32(0.5)
    xn0 = (x0 - lo[0]) / size[0] - half
    xn1 = (x1 - lo[1]) / size[1] - half
    xn2 = (x2 - lo[2]) / size[2] - half
    maxval = max(abs(xn0), abs(xn1), abs(xn2))
    mip, inv = 0, np.float32(1.0)  # the finest level holding the point (maxval < 2**mip / 2), 2**-mip
    while maxval * inv >= half:
        mip, inv = mip + 1, inv * half
        if mip >= levels:
            return levels, 0, 0, 0, False
    fres = np.float32(res)  # dividing by 2**mip is multiplying by 2**-mip, exactly
    c0 = min(max(int((xn0 * inv + half) * fres), 0), res - 1)
    c1 = min(max(int((xn1 * inv + half) * fres), 0), res - 1)
    c2 = min(max(int((xn2 * inv + half) * fres), 0), res - 1)
    return mip, c0, c1, c2, True


@jit
def _skip_until(o, d, inv_d, tm, err, lvl, first, last, box_lo, box_hi, cell_w):
    """Largest t such that every point of the ray (float64 ``o``, ``d``, ``inv_d = 1 / d``) in
    [tm, t) lies in the block of cells ``first`` to ``last`` (inclusive, per axis) of level ``lvl``
    shrunk by ``err`` and outside the box of level ``lvl - 1`` grown by it; ``tm`` when the point
    at ``tm`` itself is not in that region. ``box_lo``/``box_hi``/``cell_w`` [L, 3]: level boxes
    and cell sizes."""
    t_out, outside_inner = np.inf, lvl == 0
    t_near, t_far = -np.inf, np.inf  # the ray's interval in the grown finer box
    for a in range(3):
        p = o[a] + tm * d[a]
        f0 = box_lo[lvl, a] + first[a] * cell_w[lvl, a] + err
        f1 = box_lo[lvl, a] + (last[a] + 1) * cell_w[lvl, a] - err
        if not f0 < p < f1:
            return tm
        if d[a] > 0:
            t_out = min(t_out, (f1 - o[a]) * inv_d[a])
        elif d[a] < 0:
            t_out = min(t_out, (f0 - o[a]) * inv_d[a])
        if lvl > 0:
            b0, b1 = box_lo[lvl - 1, a] - err, box_hi[lvl - 1, a] + err
            outside_inner = outside_inner or not b0 <= p <= b1
            if d[a] != 0:
                ta, tb = (b0 - o[a]) * inv_d[a], (b1 - o[a]) * inv_d[a]
                t_near, t_far = max(t_near, min(ta, tb)), min(t_far, max(ta, tb))
            elif not b0 <= p <= b1:
                t_near = np.inf
    if not outside_inner:
        return tm
    if lvl > 0 and tm < t_near <= t_far:
        t_out = min(t_out, t_near)
    return t_out


@jit
def _empty_block(coarse, fine, lvl, c0, c1, c2, res):
    """Cells per side of the largest aligned empty block (``BLOCK**2``, ``BLOCK`` or 1) holding the
    empty cell (c0, c1, c2) of level ``lvl``; ``coarse``/``fine`` are the block occupancies."""
    b = BLOCK * BLOCK
    if not coarse[lvl, c0 // b, c1 // b, c2 // b]:
        return b
    if not fine[lvl, c0 // BLOCK, c1 // BLOCK, c2 // BLOCK]:
        return BLOCK
    return 1


@jit
def _clip(o, d, inv_d, occ_lo, occ_hi):
    """(t_in, t_out) of the ray (float64) in the box [occ_lo, occ_hi]; t_in > t_out when it misses."""
    if not occ_lo[0] <= occ_hi[0]:  # nothing occupied
        return np.inf, -np.inf
    t_in, t_out = -np.inf, np.inf
    for a in range(3):
        if d[a] != 0:
            ta, tb = (occ_lo[a] - o[a]) * inv_d[a], (occ_hi[a] - o[a]) * inv_d[a]
            t_in, t_out = max(t_in, min(ta, tb)), min(t_out, max(ta, tb))
        elif not occ_lo[a] <= o[a] <= occ_hi[a]:
            return np.inf, -np.inf
    return t_in, t_out


@jit
def _walk(o, d, o64, d64, near, k0, k_begin, count, dt, half_dt, bins, coarse, fine, lo, size32, box_lo, box_hi,
          cell_w, lvl_err, occ_lo, occ_hi, out_t, out_r, r, base, limit):
    """Kept samples of one ray among lattice steps [k_begin, count) (from k0), at most ``limit`` of
    them; written from ``base`` on when ``out_t`` (and ``out_r``) are non-empty. Returns their
    number, the steps of the first and last one, and the step the walk stopped at (``count``, or
    the one after the ``limit``-th kept sample)."""
    levels, res = bins.shape[0], bins.shape[1]
    inv_d = (1.0 / d64[0] if d64[0] != 0 else 0.0, 1.0 / d64[1] if d64[1] != 0 else 0.0,
             1.0 / d64[2] if d64[2] != 0 else 0.0)
    t_max = max(abs(np.float64(near)), abs(near + (np.float64(k0) + count + 1.0) * dt))
    ray_err = _REL_ERR * (max(abs(o64[0]), abs(o64[1]), abs(o64[2])) + t_max)
    inv_dt = 1.0 / np.float64(dt)
    # only the steps whose midpoints may lie in the box of the occupied cells (grown by a cell on
    # every level) can be kept: the walk starts and ends a step beyond them
    t_in, t_out = _clip(o64, d64, inv_d, occ_lo, occ_hi)
    if t_in <= t_out:
        k_lo = np.floor((t_in - near) * inv_dt - 0.5) - k0 - 1.0
        k_hi = np.ceil((t_out - near) * inv_dt - 0.5) - k0 + 2.0
        k_begin = max(k_begin, int(min(max(k_lo, 0.0), np.float64(count))))
        end = min(count, int(min(max(k_hi, 0.0), np.float64(count))))
    else:
        end = k_begin
    n, k, first_kept, last_kept = 0, k_begin, end, 0
    while k < end and n < limit:
        kf = np.float32(k) + k0
        t0 = near + kf * dt
        tm = t0 + half_dt
        lvl, c0, c1, c2, inside = _classify(o[0] + tm * d[0], o[1] + tm * d[1], o[2] + tm * d[2], lo, size32,
                                            levels, res)
        k += 1
        if inside and bins[lvl, c0, c1, c2]:
            if out_t.shape[0] > 0:
                out_t[base + n] = t0
            if out_r.shape[0] > 0:
                out_r[base + n] = r
            first_kept, last_kept = min(first_kept, k - 1), k - 1
            n += 1
        elif inside:
            b = _empty_block(coarse, fine, lvl, c0, c1, c2, res)
            first = (c0 // b * b, c1 // b * b, c2 // b * b)
            last = (min(first[0] + b, res) - 1, min(first[1] + b, res) - 1, min(first[2] + b, res) - 1)
            t_skip = _skip_until(o64, d64, inv_d, np.float64(tm), ray_err + lvl_err[lvl], lvl, first, last,
                                 box_lo, box_hi, cell_w)
            # the first lattice midpoint at or past t_skip: every one before it lies in the empty block
            k_next = min(np.ceil((t_skip - near) * inv_dt - 0.5) - k0, np.float64(count))
            if k_next > k:
                k = int(k_next)
    return n, first_kept, last_kept, k


@pjit
def _traverse(o, d, o64, d64, near, k0, count, dt, half_dt, bins, coarse, fine, lo, size32, box_lo, box_hi, cell_w,
              lvl_err, occ_lo, occ_hi, offsets, span, out_t, out_r):
    """Counting pass (``out_t`` empty): per ray the number of kept samples into ``offsets`` and the
    steps of the first and last one into ``span`` [R, 2]. Filling pass: the samples into
    ``out_t``/``out_r`` from ``offsets[r]`` on, walking ``span`` only."""
    fill = out_t.shape[0] > 0
    for r in prange(o.shape[0]):
        k_begin, k_end = (span[r, 0], span[r, 1] + 1) if fill else (0, count[r])
        n, first_kept, last_kept, _ = _walk(o[r], d[r], o64[r], d64[r], near[r], k0[r], k_begin, k_end, dt, half_dt,
                                            bins, coarse, fine, lo, size32, box_lo, box_hi, cell_w, lvl_err, occ_lo,
                                            occ_hi, out_t, out_r, r, offsets[r] if fill else 0, k_end)
        if not fill:  # a ray without kept samples gets the empty span [0, 0): the filling pass writes nothing
            offsets[r], span[r, 0], span[r, 1] = n, (first_kept if n else 0), (last_kept if n else -1)


@pjit
def _advance(o, d, o64, d64, near, k0, count, dt, half_dt, bins, coarse, fine, lo, size32, box_lo, box_hi, cell_w,
             lvl_err, occ_lo, occ_hi, rays, cursor, out_t, out_n):
    """For each ray ``rays[i]``, the next at most ``out_t.shape[1]`` kept samples from lattice step
    ``cursor[ray]`` on, into ``out_t[i]`` (their number into ``out_n[i]``); ``cursor`` advances past them."""
    no_rays = np.empty(0, np.int64)
    for i in prange(rays.shape[0]):
        r = rays[i]
        n, _, _, k = _walk(o[r], d[r], o64[r], d64[r], near[r], k0[r], cursor[r], count[r], dt, half_dt, bins,
                           coarse, fine, lo, size32, box_lo, box_hi, cell_w, lvl_err, occ_lo, occ_hi, out_t[i],
                           no_rays, r, 0, out_t.shape[1])
        out_n[i], cursor[r] = n, k


@pjit
def _block_any(cells, out):
    """``out[l, i, j, k]`` = any of the ``BLOCK**3`` cells of ``cells`` [L, n, n, n] in block (i, j, k)."""
    n, m = cells.shape[1], out.shape[1]
    for lb in prange(out.shape[0] * m):
        lvl, i = lb // m, lb % m
        for j in range(m):
            for k in range(m):
                occ = False
                for x in range(i * BLOCK, min(i * BLOCK + BLOCK, n)):
                    for y in range(j * BLOCK, min(j * BLOCK + BLOCK, n)):
                        for z in range(k * BLOCK, min(k * BLOCK + BLOCK, n)):
                            occ = occ or cells[lvl, x, y, z]
                out[lvl, i, j, k] = occ


_pyramid: dict[str, object] = {}  # the block occupancies of the last grid state seen


def _blocks(binaries: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cells, blocks of ``BLOCK``, blocks of ``BLOCK**2`` cells per side, occupied cell box) of
    ``binaries``, recomputed when the tensor or its contents change. The box [L, 2, 3] holds per
    level the first and last occupied cell per axis grown by one (first > last: none occupied)."""
    if _pyramid.get("source") is not binaries or _pyramid.get("version") != binaries._version:
        cells = kernels.as_array(binaries, torch.bool, "binaries", "OccupancyGrid.sample")
        levels, res = cells.shape[:2]
        fine = np.empty((levels,) + (-(-res // BLOCK),) * 3, np.bool_)
        coarse = np.empty((levels,) + (-(-fine.shape[1] // BLOCK),) * 3, np.bool_)
        kernels.call(_block_any, cells, fine)
        kernels.call(_block_any, fine, coarse)
        box = np.empty((levels, 2, 3), np.int64)
        box[:, 0], box[:, 1] = res, -1
        for lvl in range(levels):
            for a in range(3):
                occupied = np.flatnonzero(fine[lvl].any(axis=tuple(b for b in range(3) if b != a)))
                if occupied.size:  # fine blocks: whole BLOCKs, then one more cell
                    box[lvl, 0, a] = occupied[0] * BLOCK - 1
                    box[lvl, 1, a] = min(occupied[-1] * BLOCK + BLOCK - 1, res - 1) + 1
        _pyramid.update(source=binaries, version=binaries._version, arrays=(cells, fine, coarse, box))
    return _pyramid["arrays"]


class Lattice:
    """The occupied lattice samples of a batch of rays, walked on demand: :meth:`all` gives them at
    once (packed), :meth:`advance` the next few of some rays at a time, from a cursor per ray.

    ``binaries`` [L, res, res, res] bool; ``roi`` [6] float32 (level-0 box, min then max);
    ``origins``/``directions`` [R, 3] float32; ``near_p``, ``k0`` [R] float32 (lattice anchor and
    first index); ``counts`` [R] int64 (lattice steps to test); ``dt`` the step in world units.
    """

    def __init__(self, binaries: Tensor, roi: Tensor, origins: Tensor, directions: Tensor, near_p: Tensor,
                 k0: Tensor, counts: Tensor, dt: float):
        name = "OccupancyGrid.sample"
        bins, fine, coarse, occ_cells = _blocks(binaries)
        roi32 = kernels.as_array(roi, torch.float32, "roi", name)
        o = kernels.as_array(origins, torch.float32, "origins", name)
        d = kernels.as_array(directions, torch.float32, "directions", name)
        near = kernels.as_array(near_p, torch.float32, "near_p", name)
        kk = kernels.as_array(k0, torch.float32, "k0", name)
        cnt = kernels.as_array(counts, torch.int64, "counts", name)
        lo, size32 = roi32[:3].copy(), roi32[3:] - roi32[:3]
        # level l covers centre -+ size 2**l / 2 (float64, exact up to the error bound)
        center, size = (roi32[:3].astype(np.float64) + roi32[3:]) / 2, roi32[3:].astype(np.float64) - roi32[:3]
        ext = 2.0 ** np.arange(bins.shape[0])[:, None] * size
        box_lo, box_hi, cell_w = center - ext / 2, center + ext / 2, ext / bins.shape[1]
        lvl_err = _REL_ERR * (np.abs(center).max() + ext.max(1))
        # world box of the occupied cells of every level (each grown by a cell): no sample outside it is kept
        occ_lo, occ_hi = np.full(3, np.inf), np.full(3, -np.inf)
        for lvl in range(bins.shape[0]):
            if (occ_cells[lvl, 0] <= occ_cells[lvl, 1]).all():
                occ_lo = np.minimum(occ_lo, box_lo[lvl] + occ_cells[lvl, 0] * cell_w[lvl])
                occ_hi = np.maximum(occ_hi, box_lo[lvl] + (occ_cells[lvl, 1] + 1) * cell_w[lvl])
        self.args = (o, d, o.astype(np.float64), d.astype(np.float64), near, kk, cnt, np.float32(dt),
                     np.float32(0.5 * dt), bins, coarse, fine, lo, size32, box_lo, box_hi, cell_w, lvl_err, occ_lo,
                     occ_hi)
        self.cursor = np.zeros(o.shape[0], np.int64)  # the next lattice step of each ray, for advance()

    def all(self) -> tuple[Tensor, Tensor]:
        """Packed (ray_indices int64, t_starts float32) of every occupied lattice sample."""
        n_rays = self.args[0].shape[0]
        per_ray, span = torch.zeros(n_rays, dtype=torch.int64), np.zeros((n_rays, 2), np.int64)
        kernels.call(_traverse, *self.args, per_ray.numpy(), span, np.empty(0, np.float32), np.empty(0, np.int64))
        offsets = torch.cumsum(per_ray, 0) - per_ray
        total = int(per_ray.sum())
        t_starts, ray_indices = torch.empty(total, dtype=torch.float32), torch.empty(total, dtype=torch.int64)
        if total:
            kernels.call(_traverse, *self.args, offsets.numpy(), span, t_starts.numpy(), ray_indices.numpy())
        return ray_indices, t_starts

    def advance(self, rays: Tensor, limit: int) -> tuple[Tensor, Tensor]:
        """t_starts [A, limit] float32 of the next at most ``limit`` occupied samples of each ray of
        ``rays`` [A] (int64, distinct), front to back, and their number [A] (int64); fewer than
        ``limit`` means the ray has no more. The rays' cursors move past the samples returned."""
        t_starts = torch.empty(len(rays), limit, dtype=torch.float32)
        n = torch.empty(len(rays), dtype=torch.int64)
        if len(rays):
            kernels.call(_advance, *self.args, rays.contiguous().numpy(), self.cursor, t_starts.numpy(), n.numpy())
        return t_starts, n

