"""Multiresolution hash-grid encoding, forward and first-order backward (fast path of
:meth:`fieldforge.encoders.hashgrid.HashGrid.forward`).

Same semantics as the reference (tiny-cuda-nn ``HashGrid``; "Instant Neural Graphics Primitives
with a Multiresolution Hash Encoding", arXiv:2201.05989): x [N, d] in [0, 1]^d (not clamped,
float32), level l has scale s_l, table size T_l and rows [offset_l, offset_l + T_l) of the flat
table [sum_l T_l, F]. Per axis u = fma(x, s_l, 0.5) (one rounding to float32, as tiny-cuda-nn's
``fmaf``), i0 = floor(u), w = u - i0 (smoothstep: w <- w^2 (3 - 2w)). Corner c = sum_k c_k 2^k
(axis 0 fastest) has weight prod_k (w_k or 1 - w_k) and row ``(sum_k i_k m_k mod 2^32) mod T_l``
on dense levels (m_k = res_l^k) or ``xor_k (i_k pi_k mod T_l)`` on hashed ones (T_l a power of
two), computed in uint32 as tiny-cuda-nn does (the reference computes in int64 and keeps the low
32 bits: the same rows), negative coordinates included. The output is level-major [N, L*F]. Storage and accumulation are float32
as in the reference; a multiply-add is fused (rounded once), as in the reference's ``addcmul``.

Work split (deterministic, independent of the thread count): the forward and the x gradient run
in parallel over one block of points per thread, level by level inside a block so that one
level's table stays in cache, the forward gathering a point's corners together (the corner loops
unrolled for 2, 3 and 4 dimensions); the table gradient transposes grad_out to level-major in
parallel over points, then runs in parallel over levels (their rows are disjoint, each level
zeroing its own), each level visiting the points in order. The backward recomputes rows and weights
instead of storing them. Only first derivatives are provided (``once_differentiable``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from fieldforge import kernels
from fieldforge.kernels._jit import fma, jit, pjit

SUB = 128  # points per sub-block: per-axis terms and one corner's rows/weights for it stay in L1


@jit
def _axes(x, n0, nb, scale, mult, hashed, size, smooth, lo, hi, w, dw):
    """Per axis k and point j of x[n0:n0+nb] at one level: lo/hi[k, j] = i0 m_k and (i0 + 1) m_k
    (masked to T - 1 on hashed levels), w[k, j] = upper-corner weight, dw[k, j] = dw/dx."""
    one, half = np.float32(1.0), np.float32(0.5)
    mask = np.uint32(size - 1) if hashed else np.uint32(0xFFFFFFFF)
    for k in range(x.shape[1]):
        m = np.uint32(mult[k])
        for j in range(nb):
            u = fma(x[n0 + j, k], scale, half)
            fl = np.floor(u)
            a = np.uint32(np.uint32(np.int64(fl)) * m)  # uint32 wrap, as tiny-cuda-nn
            lo[k, j] = a & mask
            hi[k, j] = np.uint32(a + m) & mask
            w[k, j] = u - fl
            dw[k, j] = scale
        if smooth:
            for j in range(nb):
                t = w[k, j]
                w[k, j] = t * t * (np.float32(3.0) - np.float32(2.0) * t)
                dw[k, j] = np.float32(6.0) * t * (one - t) * scale


@jit
def _corner(c, nb, hashed, size, lo, hi, w, rows, wts):
    """rows[j] (relative to the level's first row) and wts[j] of corner c for the sub-block's nb
    points; the weight is the product over axes in order 0, 1, ... as in the reference."""
    one = np.float32(1.0)
    for j in range(nb):
        rows[j] = hi[0, j] if c & 1 else lo[0, j]
        wts[j] = w[0, j] if c & 1 else one - w[0, j]
    for k in range(1, lo.shape[0]):
        up = (c >> k) & 1
        for j in range(nb):
            t = hi[k, j] if up else lo[k, j]
            rows[j] = (rows[j] ^ t) if hashed else np.uint32(rows[j] + t)
            wts[j] = wts[j] * (w[k, j] if up else one - w[k, j])
    if not hashed:
        for j in range(nb):
            r = rows[j]
            rows[j] = r if r < size else np.uint32(r % size)  # a division only past the grid's upper boundary


@jit
def _scratch(d):
    """Buffers of one work item for :func:`_axes` and :func:`_corner`: lo, hi [d, SUB] uint32,
    w, dw [d, SUB] float32, rows [SUB] uint32, wts [SUB] float32."""
    return (np.empty((d, SUB), np.uint32), np.empty((d, SUB), np.uint32), np.empty((d, SUB), np.float32),
            np.empty((d, SUB), np.float32), np.empty(SUB, np.uint32), np.empty(SUB, np.float32))


@jit(inline="always")
def _gather(x_dim, nb, hashed, size, lo, hi, w, table, base, out, row0, col):
    """out[row0 + j, col + f] = sum_c wt_c table[base + row_c, f] for the sub-block's nb points,
    point by point: corners in order, each term added with one rounding (the reference's
    addcmul), two features at a time in registers. ``x_dim`` is a constant where the caller
    passes one, which unrolls the corner loops."""
    one, zero = np.float32(1.0), np.float32(0.0)
    n_feat = table.shape[1]
    for j in range(nb):
        for f in range(0, n_feat, 2):
            pair = f + 1 < n_feat
            a0, a1 = zero, zero
            for c in range(1 << x_dim):
                r = hi[0, j] if c & 1 else lo[0, j]
                wt = w[0, j] if c & 1 else one - w[0, j]
                for k in range(1, x_dim):
                    up = (c >> k) & 1
                    t = hi[k, j] if up else lo[k, j]
                    r = (r ^ t) if hashed else np.uint32(r + t)
                    wt = wt * (w[k, j] if up else one - w[k, j])
                if not hashed and r >= size:
                    r = np.uint32(r % size)  # a division only past the grid's upper boundary
                a0 = fma(wt, table[base + r, f], a0)
                if pair:
                    a1 = fma(wt, table[base + r, f + 1], a1)
            out[row0 + j, col + f] = a0
            if pair:
                out[row0 + j, col + f + 1] = a1


@jit
def _forward_points(x, table, scales, mult, sizes, offsets, n_dense, smooth, start, end, out):
    """out[n, l F + f] for start <= n < end, level by level (one level's table stays in cache).
    The common dimensions get their own unrolled :func:`_gather`."""
    d = x.shape[1]
    n_feat = table.shape[1]
    lo, hi, w, dw, rows, wts = _scratch(d)
    for lvl in range(scales.shape[0]):
        base, size, hashed, col = offsets[lvl], sizes[lvl], lvl >= n_dense, lvl * n_feat
        for n0 in range(start, end, SUB):
            nb = min(SUB, end - n0)
            _axes(x, n0, nb, scales[lvl], mult[lvl], hashed, size, smooth, lo, hi, w, dw)
            if d == 3:
                _gather(3, nb, hashed, size, lo, hi, w, table, base, out, n0, col)
            elif d == 2:
                _gather(2, nb, hashed, size, lo, hi, w, table, base, out, n0, col)
            elif d == 4:
                _gather(4, nb, hashed, size, lo, hi, w, table, base, out, n0, col)
            else:
                _gather(d, nb, hashed, size, lo, hi, w, table, base, out, n0, col)


@jit
def _backward_table_level(x, grad_out, scales, mult, sizes, offsets, n_dense, smooth, lvl, grad_table):
    """grad_table[offset_l + rows[c], f] = sum over points, in order, of wts[c] grad_out[l, n, f]
    ([L, N, F]) for level l = lvl (the level's rows are set, not added to)."""
    n_pts, d = x.shape
    n_feat = grad_table.shape[1]
    lo, hi, w, dw, rows, wts = _scratch(d)
    base, size, hashed, g = offsets[lvl], sizes[lvl], lvl >= n_dense, grad_out[lvl]
    grad_table[base:base + size] = 0
    for n0 in range(0, n_pts, SUB):
        nb = min(SUB, n_pts - n0)
        _axes(x, n0, nb, scales[lvl], mult[lvl], hashed, size, smooth, lo, hi, w, dw)
        for c in range(1 << d):
            _corner(c, nb, hashed, size, lo, hi, w, rows, wts)
            for j in range(nb):
                r = base + rows[j]
                for f in range(n_feat):
                    grad_table[r, f] += wts[j] * g[n0 + j, f]


@jit
def _backward_x_points(x, table, grad_out, scales, mult, sizes, offsets, n_dense, smooth, start, end, grad_x):
    """grad_x[n, k] = sum_l dw_k/dx_k sum_c (+-1) prod_{i != k} (w_i or 1 - w_i)
    <grad_out[n, l F:(l + 1) F], table[offset_l + rows[c]]> for start <= n < end, levels in order."""
    d = x.shape[1]
    n_feat = table.shape[1]
    one = np.float32(1.0)
    lo, hi, w, dw, rows, wts = _scratch(d)
    val = np.empty(SUB, np.float32)
    gw = np.empty((d, SUB), np.float32)
    grad_x[start:end] = 0
    for lvl in range(scales.shape[0]):
        base, size, hashed, col = offsets[lvl], sizes[lvl], lvl >= n_dense, lvl * n_feat
        for n0 in range(start, end, SUB):
            nb = min(SUB, end - n0)
            _axes(x, n0, nb, scales[lvl], mult[lvl], hashed, size, smooth, lo, hi, w, dw)
            gw[:] = 0
            for c in range(1 << d):
                _corner(c, nb, hashed, size, lo, hi, w, rows, wts)
                for j in range(nb):
                    r = base + rows[j]
                    acc = np.float32(0.0)
                    for f in range(n_feat):
                        acc += grad_out[n0 + j, col + f] * table[r, f]
                    val[j] = acc
                for k in range(d):
                    for j in range(nb):
                        p = val[j] if (c >> k) & 1 else -val[j]
                        for i in range(d):
                            if i != k:
                                p *= w[i, j] if (c >> i) & 1 else one - w[i, j]
                        gw[k, j] += p
            for k in range(d):
                for j in range(nb):
                    grad_x[n0 + j, k] += gw[k, j] * dw[k, j]


@pjit
def _forward(x, table, scales, mult, sizes, offsets, n_dense, smooth, sb, out):
    """The forward over blocks of sb points in parallel."""
    n_pts = x.shape[0]
    for blk in numba.prange((n_pts + sb - 1) // sb):
        _forward_points(x, table, scales, mult, sizes, offsets, n_dense, smooth, blk * sb,
                        min(n_pts, (blk + 1) * sb), out)


@pjit
def _backward_table(x, grad_out, scales, mult, sizes, offsets, n_dense, smooth, sb, grad_table):
    """The table gradient from grad_out [N, L F]: first transposed to [L, N, F] over blocks of sb
    points in parallel, then levels in parallel (their rows are disjoint)."""
    n_pts, n_levels, n_feat = x.shape[0], scales.shape[0], grad_table.shape[1]
    g = np.empty((n_levels, n_pts, n_feat), np.float32)
    for blk in numba.prange((n_pts + sb - 1) // sb):
        for n in range(blk * sb, min(n_pts, (blk + 1) * sb)):
            for lvl in range(n_levels):
                for f in range(n_feat):
                    g[lvl, n, f] = grad_out[n, lvl * n_feat + f]
    for lvl in numba.prange(n_levels):
        _backward_table_level(x, g, scales, mult, sizes, offsets, n_dense, smooth, lvl, grad_table)


@pjit
def _backward_x(x, table, grad_out, scales, mult, sizes, offsets, n_dense, smooth, sb, grad_x):
    """The x gradient over blocks of sb points in parallel."""
    n_pts = x.shape[0]
    for blk in numba.prange((n_pts + sb - 1) // sb):
        _backward_x_points(x, table, grad_out, scales, mult, sizes, offsets, n_dense, smooth, blk * sb,
                           min(n_pts, (blk + 1) * sb), grad_x)


class _Layout:
    """Per-level constants as numpy arrays: scale (float32), axis multipliers m_k [L, d], table size
    T_l, row offset (int64), the number of dense levels and the interpolation."""

    def __init__(self, scales: Tensor, mult: Tensor, sizes: Tensor, offsets: Tensor, n_dense: int,
                 smoothstep: bool):
        self.scales = kernels.as_array(scales, torch.float32, "scales", "hashgrid")
        self.mult = kernels.as_array(mult, torch.int64, "mult", "hashgrid")
        self.sizes = kernels.as_array(sizes, torch.int64, "sizes", "hashgrid")
        self.offsets = kernels.as_array(offsets, torch.int64, "offsets", "hashgrid")
        self.n_dense, self.smooth = int(n_dense), bool(smoothstep)

    def args(self) -> tuple:
        return self.scales, self.mult, self.sizes, self.offsets, self.n_dense, self.smooth


def _super_block(n_pts: int) -> int:
    """Points per parallel work item of the point-parallel kernels: one share per thread (rounded up
    to a multiple of SUB), so that each thread visits its points level by level and reuses a level's
    table in cache (fewer, larger work items are faster). No point's result depends on it."""
    share = -(-n_pts // kernels.threads())
    return max(SUB, -(-share // SUB) * SUB)


class _Encode(torch.autograd.Function):
    """The encoding as an autograd function: gradients to the table and to x, first order."""

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, layout: _Layout, known: Tensor | None = None) -> Tensor:
        if known is None:
            out = torch.empty(x.shape[0], layout.scales.size * table.shape[1], dtype=torch.float32)
            kernels.call(_forward, x.detach().numpy(), table.detach().numpy(), *layout.args(),
                         _super_block(x.shape[0]), out.numpy())
        else:  # the encoding computed earlier (no gradient then): only the backward is new
            out = known.view_as(known)
        ctx.layout, ctx.table_shape = layout, table.shape
        ctx.save_for_backward(x, table if ctx.needs_input_grad[0] else None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, table = ctx.saved_tensors
        g = grad_out.detach().contiguous().numpy()  # [N, L F]
        x = x.detach()
        grad_x = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            kernels.call(_backward_x, x.numpy(), table.detach().numpy(), g, *ctx.layout.args(),
                         _super_block(x.shape[0]), grad_x.numpy())
        if ctx.needs_input_grad[1]:
            grad_table = torch.empty(ctx.table_shape, dtype=torch.float32)
            kernels.call(_backward_table, x.numpy(), g, *ctx.layout.args(), _super_block(x.shape[0]),
                         grad_table.numpy())
        return grad_x, grad_table, None, None


def encode(x: Tensor, table: Tensor, scales: Tensor, mult: Tensor, sizes: Tensor, offsets: Tensor,
           n_dense: int, smoothstep: bool, known: Tensor | None = None) -> Tensor:
    """Hash-grid encoding of x [N, d] (float32, CPU) with ``table`` [sum_l T_l, F] (float32, CPU)
    -> [N, L*F] (level-major), differentiable once in ``x`` and ``table``. ``known``: the encoding
    of x with this table, computed earlier without gradient; it is returned (with the gradient
    of the encoding) instead of being computed again.

    ``scales`` [L] are the per-level s_l, ``mult`` [L, d] the per-axis multipliers (res_l^k on the
    first ``n_dense`` levels, the CoherentPrime primes on hashed ones), ``sizes``/``offsets`` [L]
    the table sizes T_l (powers of two on hashed levels) and first rows. Raises ValueError naming
    the argument when a shape, dtype or device does not fit.
    """
    for name, t in (("x", x), ("table", table)):
        if not isinstance(t, Tensor) or t.device.type != "cpu" or t.dtype != torch.float32 or t.ndim != 2:
            raise ValueError(f"hashgrid: {name} must be a 2-D float32 CPU tensor, got "
                             f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    layout = _Layout(scales, mult, sizes, offsets, n_dense, smoothstep)
    n_levels, d = layout.scales.size, x.shape[1]
    if not 1 <= d <= 7 or layout.mult.shape != (n_levels, d):
        raise ValueError(f"hashgrid: mult must be [{n_levels}, d] for x [N, d], 1 <= d <= 7; got "
                         f"{layout.mult.shape} and x {tuple(x.shape)}")
    if layout.sizes.shape != (n_levels,) or layout.offsets.shape != (n_levels,):
        raise ValueError(f"hashgrid: sizes and offsets must be [{n_levels}], got {layout.sizes.shape}, "
                         f"{layout.offsets.shape}")
    rows = int(layout.offsets[-1] + layout.sizes[-1]) if n_levels else 0
    if table.shape[0] != rows:
        raise ValueError(f"hashgrid: table must have {rows} rows (sum of the level sizes), got {table.shape[0]}")
    if known is not None and (known.shape != (x.shape[0], n_levels * table.shape[1]) or known.dtype != torch.float32):
        raise ValueError(f"hashgrid: known must be a float32 [{x.shape[0]}, {n_levels * table.shape[1]}] encoding, "
                         f"got {known.dtype} {tuple(known.shape)}")
    return _Encode.apply(x.contiguous(), table.contiguous(), layout, None if known is None else known.detach())
