"""Multiresolution hash grid (Instant-NGP) with tiny-cuda-nn ``HashGrid`` semantics, pure PyTorch.

Input x in [0, 1]^d (not clamped, as in tiny-cuda-nn). For level l ("Instant Neural Graphics
Primitives with a Multiresolution Hash Encoding", arXiv:2201.05989):

    scale_l = 2^(l * log2 b) * N_min - 1      (float32, as tiny-cuda-nn)
    res_l   = ceil(scale_l) + 1
    T_l     = min(roundup8(res_l^d), 2^log2_hashmap_size)
    u = x * scale_l + 0.5,  i0 = floor(u),  w = u - i0   (smoothstep: w <- w^2 (3 - 2w))

A vertex i (uint32 per axis) indexes ``sum_k i_k res_l^k`` (axis 0 fastest) when res_l^d <= T_l,
else the CoherentPrime hash ``xor_k (i_k * pi_k mod 2^32)``; either is taken modulo T_l, so dense
levels wrap at the upper boundary too. The table is one flat parameter [sum_l T_l, F]: level l
occupies rows [offset_l, offset_l + T_l). The output is level-major ``[l0 f0, l0 f1, l1 f0, ...]``.

Speed: all levels and corners are indexed at once in int64 (uint32 wrap emulated by masking) and
gathered with one ``index_select`` per chunk of points. When ``x`` does not require a gradient
(the NGP training case) the table gradient is computed by a custom backward: the forward's
indices are kept (int32) and accumulated with ``index_add_`` (memory 8 bytes per point, level and corner);
otherwise plain autograd is used, which also gives d/dx and higher derivatives.

Fast path: float32 inputs and tables on the CPU go to the fused numba kernel
:func:`fieldforge.kernels.hashgrid.encode` (same results; first derivatives only, in x and in the
table). Everything else, and every call under ``FIELDFORGE_KERNELS=torch``, runs this reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from fieldforge import kernels
from fieldforge.encoders.base import Encoding, positive

PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
MASK32 = 0xFFFFFFFF
CHUNK = 1 << 12  # points per chunk: keeps temporaries small (cache- and allocator-friendly)


def level_layout(in_dim: int, n_levels: int, log2_hashmap_size: int, base_resolution: int,
                 per_level_scale: float) -> tuple[list[float], list[int], list[int], list[bool]]:
    """Per-level (scale, resolution, table size T_l, hashed?) exactly as tiny-cuda-nn computes them."""
    log2b = np.float32(math.log2(per_level_scale))
    scales, res, sizes, hashed = [], [], [], []
    for lvl in range(n_levels):
        s = np.exp2(np.float32(lvl) * log2b) * np.float32(base_resolution) - np.float32(1.0)
        r = int(math.ceil(float(s))) + 1
        dense = r ** in_dim
        size = min((dense + 7) // 8 * 8, 1 << log2_hashmap_size)
        scales.append(float(s))
        res.append(r)
        sizes.append(size)
        hashed.append(size < dense)
    return scales, res, sizes, hashed


class HashGrid(Encoding):
    """Multiresolution hash encoding, x in [0, 1]^d -> [..., n_levels * n_features] (level-major).

    ``per_level_scale`` defaults to 2.0 (tiny-cuda-nn) unless ``max_resolution`` N_max is given,
    in which case b = exp(ln(N_max / N_min) / (n_levels - 1)) (instant-ngp). Table entries are
    initialised U(-init_scale, init_scale) (tiny-cuda-nn: 1e-4).
    """

    input_range = (0.0, 1.0)

    def __init__(self, in_dim: int = 3, n_levels: int = 16, n_features: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, per_level_scale: float | None = None,
                 max_resolution: float | None = None, interpolation: str = "linear", init_scale: float = 1e-4):
        super().__init__(in_dim)
        if self.in_dim > len(PRIMES):
            raise ValueError(f"HashGrid: in_dim must be <= {len(PRIMES)}, got {in_dim}")
        if int(n_levels) < 1 or int(n_features) < 1:
            raise ValueError(f"HashGrid: n_levels and n_features must be >= 1, got {n_levels}, {n_features}")
        if not 1 <= int(log2_hashmap_size) <= 30 or int(base_resolution) < 1:
            raise ValueError(f"HashGrid: need 1 <= log2_hashmap_size <= 30 and base_resolution >= 1, "
                             f"got {log2_hashmap_size}, {base_resolution}")
        if interpolation not in ("linear", "smoothstep"):
            raise ValueError(f"HashGrid: interpolation must be 'linear' or 'smoothstep', got {interpolation!r}")
        if per_level_scale is not None and max_resolution is not None:
            raise ValueError("HashGrid: give per_level_scale or max_resolution, not both")
        if max_resolution is not None:
            n_max = positive("max_resolution", max_resolution, "HashGrid")
            per_level_scale = math.exp(math.log(n_max / base_resolution) / max(int(n_levels) - 1, 1))
        self.per_level_scale = positive("per_level_scale", 2.0 if per_level_scale is None else per_level_scale,
                                        "HashGrid")
        self.n_levels, self.n_features = int(n_levels), int(n_features)
        self.log2_hashmap_size, self.base_resolution = int(log2_hashmap_size), int(base_resolution)
        self.interpolation = interpolation
        scales, res, sizes, hashed = level_layout(self.in_dim, self.n_levels, self.log2_hashmap_size,
                                                  self.base_resolution, self.per_level_scale)
        if any(h and not later for h, later in zip(hashed, hashed[1:])):
            raise ValueError("HashGrid: per_level_scale < 1 makes a dense level follow a hashed one")
        self.resolutions, self.table_sizes = res, sizes
        self.n_dense = sum(not h for h in hashed)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
        self.offsets = offsets
        mult = [[r ** k if not h else PRIMES[k] for k in range(self.in_dim)] for r, h in zip(res, hashed)]
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("_mult", torch.tensor(mult, dtype=torch.int64), persistent=False)
        self.register_buffer("_sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("_offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        init = positive("init_scale", init_scale, "HashGrid")
        self.params = nn.Parameter(torch.empty(sum(sizes), self.n_features).uniform_(-init, init))
        self.out_dim = self.n_levels * self.n_features

    def level_info(self) -> list[dict]:
        """Per-level scale, resolution, table size, offset and whether it is hashed."""
        return [dict(scale=float(s), resolution=r, size=t, offset=o, hashed=i >= self.n_dense)
                for i, (s, r, t, o) in enumerate(zip(self.scales.tolist(), self.resolutions,
                                                      self.table_sizes, self.offsets))]

    def corners(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Flat table rows (int64) and interpolation weights, both [L, 2^d, N], for x [N, d].

        Level-major, so one gather visits one level's table at a time (cache-friendly). Corner
        c = sum_k c_k 2^k (axis 0 fastest); weights are differentiable in x. Products of int64
        vertex coordinates (|i| < 2^31) with multipliers < 2^32 do not overflow; keeping the low
        32 bits (dense) or the low log2(T) bits (hashed, T = 2^log2_hashmap_size) afterwards
        equals tiny-cuda-nn's uint32 arithmetic, negative coordinates included.
        """
        nd = self.n_dense
        u = torch.addcmul(torch.full((), 0.5, dtype=x.dtype), x.T[:, None, :], self.scales[None, :, None])
        fl = torch.floor(u)  # u, fl, w: [d, L, N]
        w = u - fl
        if self.interpolation == "smoothstep":
            w = w * w * (3 - 2 * w)
        mult = self._mult.T[:, :, None]
        t0 = fl.to(torch.int64) * mult
        t1 = t0 + mult
        for t in (t0, t1):
            t[:, nd:] &= self._sizes[None, nd:, None] - 1

        def combine(a: Tensor, b: Tensor) -> Tensor:  # dense levels add, hashed levels xor
            return torch.cat([a[:nd] + b[:nd], a[nd:] ^ b[nd:]]) if 0 < nd < self.n_levels else \
                (a + b if nd else a ^ b)

        idx, wts = [t0[0], t1[0]], [1 - w[0], w[0]]
        for k in range(1, self.in_dim):  # the new axis is the slower corner index
            idx = [combine(i, t[k]) for t in (t0, t1) for i in idx]
            wts = [v * wk for wk in (1 - w[k], w[k]) for v in wts]
        idx = torch.stack(idx, 1)
        if nd:
            idx[:nd] = (idx[:nd] & MASK32) % self._sizes[:nd, None, None]
        return idx + self._offsets[:, None, None], torch.stack(wts, 1)

    def _lookup(self, params: Tensor, x: Tensor) -> Tensor:
        """Encoding of x [N, d] -> [N, L*F]; differentiable in ``params`` and ``x``."""
        idx, wts = self.corners(x)
        feats = params.index_select(0, idx.reshape(-1)).view(*idx.shape, self.n_features)
        return self._blend(wts.to(feats.dtype), feats)

    def _blend(self, wts: Tensor, feats: Tensor) -> Tensor:
        """sum_c wts[l, c, n] * feats[l, c, n, f] -> [N, L*F] (level-major)."""
        acc = wts[:, 0, :, None] * feats[:, 0]
        for c in range(1, wts.shape[1]):
            acc = acc.addcmul(wts[:, c, :, None], feats[:, c])
        return acc.transpose(0, 1).reshape(wts.shape[2], self.out_dim)

    def _gather_blend(self, params: Tensor, idx: Tensor, wts: Tensor) -> Tensor:
        """:meth:`_blend` of the rows ``idx`` without autograd; gathers F=2 float32 rows as one float64."""
        if self.n_features == 2 and params.dtype == torch.float32:
            feats = params.view(torch.float64).view(-1).index_select(0, idx.reshape(-1)).view(torch.float32)
        else:
            feats = params.index_select(0, idx.reshape(-1))
        return self._blend(wts, feats.view(*idx.shape, self.n_features))

    def forward(self, x: Tensor, known: Tensor | None = None) -> Tensor:
        """Encoding [..., L*F] of x [..., d]. ``known``: this encoding of ``x``, computed earlier
        without gradient (e.g. to prune samples before training on them); the result then has the
        values of ``known`` and the gradient of the encoding, and the fast path does not compute
        it again (the reference path recomputes it when a gradient is wanted)."""
        self._check(x)
        lead = x.shape[:-1]
        if x.dtype == self.params.dtype == torch.float32 and kernels.enabled(x, self.params):
            try:
                from fieldforge.kernels.hashgrid import encode
                return encode(x.reshape(-1, self.in_dim), self.params, self.scales, self._mult, self._sizes,
                              self._offsets, self.n_dense, self.interpolation == "smoothstep",
                              None if known is None else known.reshape(-1, self.out_dim)
                              ).reshape(*lead, self.out_dim)
            except kernels.Unavailable:
                pass
        if known is not None and not (torch.is_grad_enabled() and (x.requires_grad or self.params.requires_grad)):
            return known.reshape(*lead, self.out_dim)  # no gradient wanted: the known values are the encoding
        x = x.reshape(-1, self.in_dim).to(self.params.dtype)
        if x.requires_grad and torch.is_grad_enabled():
            out = torch.cat([self._lookup(self.params, c) for c in x.split(CHUNK)]) if x.shape[0] else \
                x.new_zeros(0, self.out_dim)
        else:
            keep = torch.is_grad_enabled() and self.params.requires_grad  # Function.forward runs in no_grad
            out = _FusedLookup.apply(self.params, x.detach(), self, keep)
        return out.reshape(*lead, self.out_dim)


class _FusedLookup(torch.autograd.Function):
    """Table lookup per chunk of points; when the table needs a gradient the chunk's rows (int32)
    and weights are kept, so the backward is one ``index_add_`` per chunk with no recomputation
    (int64 indices for it: index_add_ with int32 indices is much slower on CPU)."""

    @staticmethod
    def forward(ctx, params: Tensor, x: Tensor, grid: HashGrid, keep: bool) -> Tensor:
        ctx.shape, ctx.n_features, ctx.n_levels = params.shape, grid.n_features, grid.n_levels
        rows, weights = [], []
        with torch.no_grad():
            out = torch.empty(x.shape[0], grid.out_dim, dtype=params.dtype, device=params.device)
            for s in range(0, x.shape[0], CHUNK):
                idx, wts = grid.corners(x[s:s + CHUNK])
                out[s:s + CHUNK] = grid._gather_blend(params, idx, wts)
                if keep:
                    rows.append(idx.to(torch.int32))
                    weights.append(wts)
        ctx.rows, ctx.weights = rows, weights
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad = torch.zeros(ctx.shape, dtype=grad_out.dtype, device=grad_out.device)
        F, L = ctx.n_features, ctx.n_levels
        for s, idx, wts in zip(range(0, grad_out.shape[0], CHUNK), ctx.rows, ctx.weights):
            g = grad_out[s:s + CHUNK].reshape(-1, L, 1, F).permute(1, 2, 0, 3)
            grad.index_add_(0, idx.reshape(-1).long(), (wts[..., None] * g).reshape(-1, F))
        ctx.rows, ctx.weights = [], []
        return grad, None, None, None
