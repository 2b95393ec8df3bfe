"""Kernel-technology spike: which way of writing fused multi-threaded CPU kernels fits fieldforge.

    python benchmarks/kernel_spike.py [--candidates torch,numba,cpp,compile,taichi] [--repeats 5]
                                      [--threads 2,1] [--out benchmarks/results/kernel_spike.json]

Candidates (each run in fresh subprocesses, so that compile times are honest):

- ``torch``: the pure-PyTorch reference code of fieldforge (the baseline);
- ``numba``: ``@njit(parallel=True, cache=True)`` kernels with ``prange`` (LLVM inside the wheel);
- ``cpp``: a C++/OpenMP extension built at first use by ``torch.utils.cpp_extension.load_inline``;
- ``compile``: ``torch.compile`` (Inductor's C++/OpenMP CPU backend) of the reference code;
- ``taichi``: ``@ti.kernel`` on the x64 backend (LLVM inside the wheel).

NVIDIA Warp is not measured: its CPU backend runs a kernel launch as one sequential loop on a
single thread (https://github.com/NVIDIA/warp/issues/1309), which rules it out here.

Workloads (same inputs for every candidate, each checked against the reference before timing):

1. ``hashgrid``: multiresolution hash encoding (Instant Neural Graphics Primitives with a
   Multiresolution Hash Encoding, arXiv:2201.05989) with tiny-cuda-nn semantics, exactly as
   :class:`fieldforge.encoders.hashgrid.HashGrid`: 65,536 points in [0, 1]^3, 16 levels, 2
   features, 2^17 rows per level, base resolution 16, per-level scale 1.3195, trilinear; dense
   levels (res^3 <= T) index row-major, the others by the CoherentPrime xor hash. Forward, then
   the backward to the table (scatter-add), which the kernels run in parallel over levels so
   that no two threads write the same row.
2. ``blend``: front-to-back alpha blending of one 200x200 image (3D Gaussian Splatting for
   Real-Time Radiance Field Rendering, arXiv:2308.04079, with gsplat's rules: alpha =
   min(0.99, o exp(-e)), skip alpha < 1/255, stop before T < 1e-4) of 100k random Gaussians
   projected and binned once into 16x16 tiles by fieldforge's torch code; forward and backward
   (gradients to means2d, conics, opacities, colours). The kernels run in parallel over tiles,
   write per-intersection partial gradients and reduce them serially in list order.

Per candidate and workload: the median wall time of forward+backward at each thread count, the
first-use time in a fresh process (import, build and the first call: this is where compilation
happens) with an empty cache and again in a second fresh process with the cache of the first,
whether results are bit-identical across thread counts, and whether the candidate works
without a C++ compiler (a third fresh process with ``CXX``/``CC`` pointing nowhere). Prints a
markdown table and writes JSON (written again after each candidate, so partial runs keep
their results).
"""

# No ``from __future__ import annotations`` here: Taichi reads kernel annotations as objects.

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

CANDIDATES = ("torch", "numba", "cpp", "compile", "taichi")
WORKLOADS = ("hashgrid", "blend")
HASHGRID = dict(n_points=65536, n_levels=16, n_features=2, log2_hashmap_size=17, base_resolution=16,
                per_level_scale=1.3195)
PRIMES = (1, 2654435761, 805459861)  # tiny-cuda-nn's CoherentPrime hash, per axis
BLEND = dict(n_gaussians=100000, width=200, height=200, tile_size=16)
INSTALL = {
    "torch": "nothing beyond torch",
    "numba": "pip install numba (numba + llvmlite wheels; LLVM bundled, no system compiler)",
    "cpp": "torch, ninja (pip) and a system C++ compiler with OpenMP (g++/clang++, plus libomp on macOS) "
           "and the Python headers",
    "compile": "torch only, plus a system C++ compiler (and OpenMP) for Inductor's CPU backend and the "
               "Python headers",
    "taichi": "pip install taichi (taichi + dill wheels; LLVM bundled, no system compiler)",
}
NOT_MEASURED = {"warp": "NVIDIA Warp runs CPU kernels on one thread (https://github.com/NVIDIA/warp/issues/1309); "
                        "not measured"}
MAX_ALPHA, ALPHA_MIN, T_MIN = 0.99, 1.0 / 255.0, 1e-4


# ----------------------------------------------------------------------------- inputs and reference

def hashgrid_inputs() -> dict:
    """The reference grid, points, upstream gradient and the layout arrays the kernels take."""
    from fieldforge.encoders.hashgrid import HashGrid

    torch.manual_seed(0)
    c = HASHGRID
    grid = HashGrid(3, c["n_levels"], c["n_features"], c["log2_hashmap_size"], c["base_resolution"],
                    per_level_scale=c["per_level_scale"], init_scale=1.0)
    x = torch.rand(c["n_points"], 3)
    g = torch.randn(c["n_points"], grid.out_dim)
    return dict(grid=grid, x=x, g=g, table=grid.params.detach().clone(), scales=grid.scales.clone(),
                res=torch.tensor(grid.resolutions, dtype=torch.int64), sizes=grid._sizes.clone(),
                offsets=grid._offsets.clone(), n_dense=grid.n_dense)


def blend_inputs() -> dict:
    """One projected and binned random view, and fixed upstream gradients of colour and alpha."""
    from fieldforge.apps.bench.splat import random_view
    from fieldforge.render.raster_project import project_gaussians
    from fieldforge.render.raster_tiles import bin_tiles

    c = BLEND
    w, h = c["width"], c["height"]
    (means, quats, scales, opac, colors), vm, K = random_view(c["n_gaussians"], w, h)
    with torch.no_grad():
        radii, means2d, depths, conics = project_gaussians(means, quats, scales, vm, K, w, h, opacities=opac)
    vis = (radii[0] > 0).all(-1)
    bins = bin_tiles(means2d[0, vis], radii[0, vis], depths[0, vis], w, h, c["tile_size"])
    gen = torch.Generator().manual_seed(1)
    return dict(means2d=means2d[0, vis].contiguous(), conics=conics[0, vis].contiguous(),
                opacities=opac[vis].contiguous(), colors=colors[vis].contiguous(), background=torch.ones(3),
                bins=bins, width=w, height=h, g_rgb=torch.randn(h, w, 3, generator=gen),
                g_alpha=torch.randn(h, w, 1, generator=gen))


def torch_hashgrid(d: dict, lookup=None) -> list[torch.Tensor]:
    """Reference forward and table gradient: fieldforge's HashGrid (its fused custom backward), or
    its differentiable gather ``lookup(params, x)`` when given."""
    grid = d["grid"]
    grid.params.grad = None
    out = grid(d["x"]) if lookup is None else lookup(grid.params, d["x"])
    out.backward(d["g"])
    return [out.detach(), grid.params.grad]


def torch_blend(d: dict, composite=None) -> list[torch.Tensor]:
    """Reference forward and gradients: fieldforge's vectorised tile compositor, or ``composite``
    with its signature when given."""
    from fieldforge.render.raster_composite import composite_tiles

    leaves = [d[k].detach().requires_grad_(True) for k in ("means2d", "conics", "opacities", "colors")]
    rgb, alpha = (composite or composite_tiles)(*leaves, d["background"], d["bins"], d["width"], d["height"])
    ((rgb * d["g_rgb"]).sum() + (alpha * d["g_alpha"]).sum()).backward()
    return [rgb.detach(), alpha.detach()] + [t.grad for t in leaves]


def blend_with(d: dict, forward, backward) -> list[torch.Tensor]:
    """Drive a candidate's blend kernels: ``forward(...) -> rgb [H, W, 3], T_final [H, W]`` and
    ``backward(..., g_rgb, tail0) -> [M, 9]`` per-Gaussian gradients (2 mean, 3 conic, 1 opacity,
    3 colour), summed from per-intersection partials in list order. ``tail0`` = g.C + (g.bg -
    g_alpha) T_final per pixel is the part of the backward's tail sums known up front."""
    b = d["bins"]
    args = (d["means2d"], d["conics"], d["opacities"], d["colors"], b.offsets, b.ids,
            b.tiles_x, b.tile_size, d["width"], d["height"])
    rgb, T = forward(*args, d["background"])
    acc = rgb - T[..., None] * d["background"]
    g_rgb, g_alpha = d["g_rgb"], d["g_alpha"][..., 0]
    tail0 = (g_rgb * acc).sum(-1) + ((g_rgb * d["background"]).sum(-1) - g_alpha) * T
    grads = backward(*args, g_rgb.contiguous(), tail0.contiguous())
    return [rgb, (1 - T)[..., None], grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, 6:9]]


# ----------------------------------------------------------------------------- numba

def numba_candidate() -> dict:
    """numba kernels (``prange`` over points / levels / tiles) behind the common workload calls."""
    import numba
    import numba.extending
    from numba import prange

    opts = dict(cache=True, nogil=True, error_model="numpy")

    one, half = np.float32(1.0), np.float32(0.5)

    @numba.extending.register_jitable  # a plain function inlined by callers (a dispatcher defeats caching)
    def cell(x, n, s):
        """Lower vertex (int64 per axis) and fractional position of x[n] on a level of scale s."""
        u = (x[n, 0] * s + half, x[n, 1] * s + half, x[n, 2] * s + half)
        f = (np.floor(u[0]), np.floor(u[1]), np.floor(u[2]))
        return (np.int64(f[0]), np.int64(f[1]), np.int64(f[2])), (u[0] - f[0], u[1] - f[1], u[2] - f[2])

    @numba.extending.register_jitable
    def corner(i0, w, c, r, size, dense, off):
        """Table row and trilinear weight of corner c (bit k set = upper vertex on axis k)."""
        ix, iy, iz = i0[0] + (c & 1), i0[1] + ((c >> 1) & 1), i0[2] + ((c >> 2) & 1)
        wc = (w[0] if c & 1 else one - w[0]) * (w[1] if c & 2 else one - w[1]) * (w[2] if c & 4 else one - w[2])
        if dense:
            return off + ((ix + iy * r + iz * r * r) & 0xFFFFFFFF) % size, wc
        return off + ((ix ^ (iy * PRIMES[1]) ^ (iz * PRIMES[2])) & (size - 1)), wc

    @numba.njit(parallel=True, **opts)
    def hg_forward(x, table, scales, res, sizes, offsets, n_dense, out):
        F = table.shape[1]
        for n in prange(x.shape[0]):
            for lvl in range(scales.shape[0]):
                i0, w = cell(x, n, scales[lvl])
                for c in range(8):
                    row, wc = corner(i0, w, c, res[lvl], sizes[lvl], lvl < n_dense, offsets[lvl])
                    for f in range(F):
                        out[n, lvl * F + f] += wc * table[row, f]

    @numba.njit(parallel=True, **opts)
    def hg_backward(x, g, scales, res, sizes, offsets, n_dense, grad):
        F = grad.shape[1]
        for lvl in prange(scales.shape[0]):
            for n in range(x.shape[0]):
                i0, w = cell(x, n, scales[lvl])
                for c in range(8):
                    row, wc = corner(i0, w, c, res[lvl], sizes[lvl], lvl < n_dense, offsets[lvl])
                    for f in range(F):
                        grad[row, f] += wc * g[n, lvl * F + f]

    @numba.njit(parallel=True, **opts)
    def bl_forward(means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, bg, rgb, T_out):
        for t in prange(offsets.shape[0] - 1):
            for p in range(ts * ts):
                ix, iy = (t % tiles_x) * ts + p % ts, (t // tiles_x) * ts + p // ts
                if ix >= width or iy >= height:
                    continue
                px, py = np.float32(ix + 0.5), np.float32(iy + 0.5)
                T = np.float32(1.0)
                c0 = c1 = c2 = np.float32(0.0)
                for i in range(offsets[t], offsets[t + 1]):
                    gi = ids[i]
                    dx, dy = means[gi, 0] - px, means[gi, 1] - py
                    e = np.float32(0.5) * (conics[gi, 0] * dx * dx + conics[gi, 2] * dy * dy) + conics[gi, 1] * dx * dy
                    if e < 0:
                        continue
                    a = min(np.float32(MAX_ALPHA), opac[gi] * np.exp(-e))
                    if a < ALPHA_MIN:
                        continue
                    Tn = T * (1 - a)
                    if Tn <= T_MIN:
                        break
                    c0 += a * T * colors[gi, 0]
                    c1 += a * T * colors[gi, 1]
                    c2 += a * T * colors[gi, 2]
                    T = Tn
                rgb[iy, ix, 0], rgb[iy, ix, 1], rgb[iy, ix, 2] = c0 + T * bg[0], c1 + T * bg[1], c2 + T * bg[2]
                T_out[iy, ix] = T

    @numba.njit(parallel=True, **opts)
    def bl_partials(means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, g_rgb, tail0, part):
        for t in prange(offsets.shape[0] - 1):
            for p in range(ts * ts):
                ix, iy = (t % tiles_x) * ts + p % ts, (t // tiles_x) * ts + p // ts
                if ix >= width or iy >= height:
                    continue
                px, py = np.float32(ix + 0.5), np.float32(iy + 0.5)
                g0, g1, g2 = g_rgb[iy, ix, 0], g_rgb[iy, ix, 1], g_rgb[iy, ix, 2]
                T, pre, tail_0 = np.float32(1.0), np.float32(0.0), tail0[iy, ix]
                for i in range(offsets[t], offsets[t + 1]):
                    gi = ids[i]
                    A, B, C = conics[gi, 0], conics[gi, 1], conics[gi, 2]
                    dx, dy = means[gi, 0] - px, means[gi, 1] - py
                    e = np.float32(0.5) * (A * dx * dx + C * dy * dy) + B * dx * dy
                    if e < 0:
                        continue
                    G = np.exp(-e)
                    raw = opac[gi] * G
                    a = min(np.float32(MAX_ALPHA), raw)
                    if a < ALPHA_MIN:
                        continue
                    Tn = T * (1 - a)
                    if Tn <= T_MIN:
                        break
                    wgt = a * T
                    gc = g0 * colors[gi, 0] + g1 * colors[gi, 1] + g2 * colors[gi, 2]
                    pre += wgt * gc
                    ga = T * gc - (tail_0 - pre) / (1 - a) if raw < MAX_ALPHA else np.float32(0.0)
                    ge = -ga * a
                    part[i, 0] += ge * (A * dx + B * dy)
                    part[i, 1] += ge * (C * dy + B * dx)
                    part[i, 2] += np.float32(0.5) * ge * dx * dx
                    part[i, 3] += ge * dx * dy
                    part[i, 4] += np.float32(0.5) * ge * dy * dy
                    part[i, 5] += ga * G
                    part[i, 6] += wgt * g0
                    part[i, 7] += wgt * g1
                    part[i, 8] += wgt * g2
                    T = Tn

    @numba.njit(**opts)
    def reduce_partials(ids, part, out):
        for i in range(ids.shape[0]):
            for k in range(part.shape[1]):
                out[ids[i], k] = out[ids[i], k] + part[i, k]

    def sync():
        numba.set_num_threads(torch.get_num_threads())

    def hashgrid(d):
        sync()
        x = d["x"].numpy()
        out = torch.zeros(x.shape[0], d["grid"].out_dim)
        lay = (d["scales"].numpy(), d["res"].numpy(), d["sizes"].numpy(), d["offsets"].numpy(), d["n_dense"])
        hg_forward(x, d["table"].numpy(), *lay, out.numpy())
        grad = torch.zeros_like(d["table"])
        hg_backward(x, d["g"].numpy(), *lay, grad.numpy())
        return [out, grad]

    def forward(means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, bg):
        rgb, T = torch.empty(height, width, 3), torch.empty(height, width)
        bl_forward(means.numpy(), conics.numpy(), opac.numpy(), colors.numpy(), offsets.numpy(), ids.numpy(),
                   tiles_x, ts, width, height, bg.numpy(), rgb.numpy(), T.numpy())
        return rgb, T

    def backward(means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, g_rgb, tail0):
        part = torch.zeros(ids.shape[0], 9)
        bl_partials(means.numpy(), conics.numpy(), opac.numpy(), colors.numpy(), offsets.numpy(), ids.numpy(),
                    tiles_x, ts, width, height, g_rgb.numpy(), tail0.numpy(), part.numpy())
        out = torch.zeros(means.shape[0], 9)
        reduce_partials(ids.numpy(), part.numpy(), out.numpy())
        return out

    def blend(d):
        sync()
        return blend_with(d, forward, backward)

    return dict(hashgrid=hashgrid, blend=blend, version=f"numba {numba.__version__}")


# ----------------------------------------------------------------------------- C++ / OpenMP

CPP_SOURCE = r"""
#include <torch/extension.h>
#include <cmath>
#include <cstdint>

static inline int64_t corner_row(const int64_t* i0, int c, int64_t r, int64_t size, bool dense, int64_t off) {
  uint32_t ix = i0[0] + (c & 1), iy = i0[1] + ((c >> 1) & 1), iz = i0[2] + ((c >> 2) & 1);
  if (dense) return off + (int64_t)((uint32_t)(ix + iy * (uint32_t)r + iz * (uint32_t)(r * r)) % (uint64_t)size);
  return off + (int64_t)((ix ^ (iy * 2654435761u) ^ (iz * 805459861u)) & (uint32_t)(size - 1));
}

static inline void cell(const float* p, float s, int64_t* i0, float* w) {
  for (int k = 0; k < 3; ++k) {
    float u = p[k] * s + 0.5f, f = std::floor(u);
    i0[k] = (int64_t)f;
    w[k] = u - f;
  }
}

static inline float corner_weight(const float* w, int c) {
  return ((c & 1) ? w[0] : 1 - w[0]) * ((c & 2) ? w[1] : 1 - w[1]) * ((c & 4) ? w[2] : 1 - w[2]);
}

torch::Tensor hg_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales, torch::Tensor res,
                         torch::Tensor sizes, torch::Tensor offsets, int64_t n_dense) {
  const int64_t N = x.size(0), L = scales.size(0), F = table.size(1);
  auto out = torch::zeros({N, L * F});
  const float *xp = x.data_ptr<float>(), *tp = table.data_ptr<float>(), *sp = scales.data_ptr<float>();
  const int64_t *rp = res.data_ptr<int64_t>(), *zp = sizes.data_ptr<int64_t>(), *op = offsets.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t n = 0; n < N; ++n) {
    int64_t i0[3];
    float w[3];
    for (int64_t l = 0; l < L; ++l) {
      cell(xp + 3 * n, sp[l], i0, w);
      for (int c = 0; c < 8; ++c) {
        float wc = corner_weight(w, c);
        int64_t row = corner_row(i0, c, rp[l], zp[l], l < n_dense, op[l]);
        for (int64_t f = 0; f < F; ++f) o[n * L * F + l * F + f] += wc * tp[row * F + f];
      }
    }
  }
  return out;
}

torch::Tensor hg_backward(torch::Tensor x, torch::Tensor g, torch::Tensor scales, torch::Tensor res,
                          torch::Tensor sizes, torch::Tensor offsets, int64_t n_dense, int64_t rows, int64_t F) {
  const int64_t N = x.size(0), L = scales.size(0);
  auto grad = torch::zeros({rows, F});
  const float *xp = x.data_ptr<float>(), *gp = g.data_ptr<float>(), *sp = scales.data_ptr<float>();
  const int64_t *rp = res.data_ptr<int64_t>(), *zp = sizes.data_ptr<int64_t>(), *op = offsets.data_ptr<int64_t>();
  float* gr = grad.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t l = 0; l < L; ++l) {
    int64_t i0[3];
    float w[3];
    for (int64_t n = 0; n < N; ++n) {
      cell(xp + 3 * n, sp[l], i0, w);
      for (int c = 0; c < 8; ++c) {
        float wc = corner_weight(w, c);
        int64_t row = corner_row(i0, c, rp[l], zp[l], l < n_dense, op[l]);
        for (int64_t f = 0; f < F; ++f) gr[row * F + f] += wc * gp[n * L * F + l * F + f];
      }
    }
  }
  return grad;
}

std::vector<torch::Tensor> bl_forward(torch::Tensor means, torch::Tensor conics, torch::Tensor opac,
                                      torch::Tensor colors, torch::Tensor offsets, torch::Tensor ids,
                                      int64_t tiles_x, int64_t ts, int64_t width, int64_t height, torch::Tensor bg) {
  auto rgb = torch::empty({height, width, 3}), Tout = torch::empty({height, width});
  const float *m = means.data_ptr<float>(), *cn = conics.data_ptr<float>(), *op = opac.data_ptr<float>(),
              *col = colors.data_ptr<float>(), *b = bg.data_ptr<float>();
  const int64_t *off = offsets.data_ptr<int64_t>(), *id = ids.data_ptr<int64_t>();
  float *out = rgb.data_ptr<float>(), *To = Tout.data_ptr<float>();
  const int64_t n_tiles = offsets.size(0) - 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t t = 0; t < n_tiles; ++t) {
    for (int64_t p = 0; p < ts * ts; ++p) {
      int64_t ix = (t % tiles_x) * ts + p % ts, iy = (t / tiles_x) * ts + p / ts;
      if (ix >= width || iy >= height) continue;
      float px = ix + 0.5f, py = iy + 0.5f, T = 1.f, c[3] = {0.f, 0.f, 0.f};
      for (int64_t i = off[t]; i < off[t + 1]; ++i) {
        int64_t gi = id[i];
        float dx = m[2 * gi] - px, dy = m[2 * gi + 1] - py;
        float e = 0.5f * (cn[3 * gi] * dx * dx + cn[3 * gi + 2] * dy * dy) + cn[3 * gi + 1] * dx * dy;
        if (e < 0.f) continue;
        float a = std::min(0.99f, op[gi] * std::exp(-e));
        if (a < 1.f / 255.f) continue;
        float Tn = T * (1.f - a);
        if (Tn <= 1e-4f) break;
        for (int k = 0; k < 3; ++k) c[k] += a * T * col[3 * gi + k];
        T = Tn;
      }
      for (int k = 0; k < 3; ++k) out[(iy * width + ix) * 3 + k] = c[k] + T * b[k];
      To[iy * width + ix] = T;
    }
  }
  return {rgb, Tout};
}

torch::Tensor bl_backward(torch::Tensor means, torch::Tensor conics, torch::Tensor opac, torch::Tensor colors,
                          torch::Tensor offsets, torch::Tensor ids, int64_t tiles_x, int64_t ts, int64_t width,
                          int64_t height, torch::Tensor g_rgb, torch::Tensor tail0) {
  const int64_t n_isects = ids.size(0), n_tiles = offsets.size(0) - 1;
  auto part = torch::zeros({n_isects, 9}), out = torch::zeros({means.size(0), 9});
  const float *m = means.data_ptr<float>(), *cn = conics.data_ptr<float>(), *op = opac.data_ptr<float>(),
              *col = colors.data_ptr<float>(), *gr = g_rgb.data_ptr<float>(), *tl = tail0.data_ptr<float>();
  const int64_t *off = offsets.data_ptr<int64_t>(), *id = ids.data_ptr<int64_t>();
  float *pp = part.data_ptr<float>(), *o = out.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t t = 0; t < n_tiles; ++t) {
    for (int64_t p = 0; p < ts * ts; ++p) {
      int64_t ix = (t % tiles_x) * ts + p % ts, iy = (t / tiles_x) * ts + p / ts;
      if (ix >= width || iy >= height) continue;
      const float* g = gr + (iy * width + ix) * 3;
      float px = ix + 0.5f, py = iy + 0.5f, T = 1.f, pre = 0.f, tail_0 = tl[iy * width + ix];
      for (int64_t i = off[t]; i < off[t + 1]; ++i) {
        int64_t gi = id[i];
        float A = cn[3 * gi], B = cn[3 * gi + 1], C = cn[3 * gi + 2];
        float dx = m[2 * gi] - px, dy = m[2 * gi + 1] - py;
        float e = 0.5f * (A * dx * dx + C * dy * dy) + B * dx * dy;
        if (e < 0.f) continue;
        float G = std::exp(-e), raw = op[gi] * G, a = std::min(0.99f, raw);
        if (a < 1.f / 255.f) continue;
        float Tn = T * (1.f - a);
        if (Tn <= 1e-4f) break;
        float w = a * T, gc = g[0] * col[3 * gi] + g[1] * col[3 * gi + 1] + g[2] * col[3 * gi + 2];
        pre += w * gc;
        float ga = raw < 0.99f ? T * gc - (tail_0 - pre) / (1.f - a) : 0.f, ge = -ga * a;
        float* q = pp + 9 * i;
        q[0] += ge * (A * dx + B * dy);
        q[1] += ge * (C * dy + B * dx);
        q[2] += 0.5f * ge * dx * dx;
        q[3] += ge * dx * dy;
        q[4] += 0.5f * ge * dy * dy;
        q[5] += ga * G;
        for (int k = 0; k < 3; ++k) q[6 + k] += w * g[k];
        T = Tn;
      }
    }
  }
  for (int64_t i = 0; i < n_isects; ++i)
    for (int k = 0; k < 9; ++k) o[9 * id[i] + k] += pp[9 * i + k];
  return out;
}
"""


def cpp_candidate() -> dict:
    """:data:`CPP_SOURCE` built by ``load_inline`` (OpenMP on torch's thread count)."""
    from torch.utils.cpp_extension import load_inline

    ext = load_inline("kernel_spike_ext", CPP_SOURCE,
                      functions=["hg_forward", "hg_backward", "bl_forward", "bl_backward"],
                      extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])

    def hashgrid(d):
        lay = (d["scales"], d["res"], d["sizes"], d["offsets"], d["n_dense"])
        out = ext.hg_forward(d["x"], d["table"], *lay)
        return [out, ext.hg_backward(d["x"], d["g"], *lay, *d["table"].shape)]

    def blend(d):
        return blend_with(d, lambda *a: tuple(ext.bl_forward(*a)), ext.bl_backward)

    return dict(hashgrid=hashgrid, blend=blend, version=f"torch {torch.__version__} cpp_extension")


# ----------------------------------------------------------------------------- torch.compile

def compile_candidate() -> dict:
    """``torch.compile`` of the reference code: HashGrid's gather (autograd backward) and the
    whole tile compositor (its data-dependent loops break the graph into many pieces)."""
    import torch._dynamo
    from fieldforge.render.raster_composite import composite_tiles

    state: dict = {}

    def set_threads(n: int) -> None:  # Inductor bakes the thread count into its code: recompile
        torch._dynamo.reset()
        state.clear()

    def hashgrid(d):
        if "lookup" not in state:
            state["lookup"] = torch.compile(d["grid"]._lookup)
        return torch_hashgrid(d, state["lookup"])

    def blend(d):
        if "composite" not in state:
            state["composite"] = torch.compile(composite_tiles)
        return torch_blend(d, state["composite"])

    return dict(hashgrid=hashgrid, blend=blend, set_threads=set_threads,
                version=f"torch {torch.__version__} inductor")


# ----------------------------------------------------------------------------- Taichi

def taichi_candidate(cache_dir: str) -> dict:
    """Taichi kernels on the x64 backend, offline cache in ``cache_dir``."""
    import taichi as ti

    kernels: dict = {}

    def init(n: int) -> None:
        """(Re)start the runtime on n threads (fixed per runtime) and define the kernels for it."""
        ti.reset()
        ti.init(arch=ti.cpu, cpu_max_num_threads=n, offline_cache=True, offline_cache_file_path=cache_dir,
                log_level=ti.WARN)
        kernels.update(taichi_kernels(ti))

    init(torch.get_num_threads())

    def hashgrid(d):
        lay = (d["scales"], d["res"], d["sizes"], d["offsets"], d["n_dense"])
        out = torch.zeros(d["x"].shape[0], d["grid"].out_dim)
        kernels["hg_forward"](d["x"], d["table"], *lay, out)
        grad = torch.zeros_like(d["table"])
        kernels["hg_backward"](d["x"], d["g"], *lay, grad)
        return [out, grad]

    def forward(means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, bg):
        rgb, T = torch.empty(height, width, 3), torch.empty(height, width)
        kernels["bl_forward"](means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, bg, rgb, T)
        return rgb, T

    def backward(means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, g_rgb, tail0):
        part, out = torch.zeros(ids.shape[0], 9), torch.zeros(means.shape[0], 9)
        kernels["bl_partials"](means, conics, opac, colors, offsets, ids, tiles_x, ts, width, height, g_rgb, tail0,
                               part)
        kernels["reduce_partials"](ids, part, out)
        return out

    return dict(hashgrid=hashgrid, blend=lambda d: blend_with(d, forward, backward), set_threads=init,
                version=f"taichi {'.'.join(map(str, ti.__version__))}")


def taichi_kernels(ti) -> dict:
    """The Taichi kernels (the outermost loop of a kernel is the parallel one; array updates are
    written ``a[i] = a[i] + v`` because ``+=`` on an ndarray compiles to an atomic add)."""
    arr = ti.types.ndarray()

    @ti.func
    def corner_row(i0, c, r, size, dense, off):
        ix = ti.cast(i0[0] + (c & 1), ti.u32)
        iy = ti.cast(i0[1] + ((c >> 1) & 1), ti.u32)
        iz = ti.cast(i0[2] + ((c >> 2) & 1), ti.u32)
        row = ti.u32(0)
        if dense:
            ru = ti.cast(r, ti.u32)
            row = (ix + iy * ru + iz * ru * ru) % ti.cast(size, ti.u32)
        else:
            row = (ix ^ (iy * ti.u32(2654435761)) ^ (iz * ti.u32(805459861))) & ti.cast(size - 1, ti.u32)
        return off + ti.cast(row, ti.i64)

    @ti.func
    def cell(x: ti.template(), n, s):
        u = ti.Vector([x[n, 0], x[n, 1], x[n, 2]]) * s + 0.5
        f = ti.floor(u)
        return ti.cast(f, ti.i64), u - f

    @ti.func
    def corner_weight(w, c):
        wx = w[0] if c & 1 else 1 - w[0]
        wy = w[1] if c & 2 else 1 - w[1]
        wz = w[2] if c & 4 else 1 - w[2]
        return wx * wy * wz

    @ti.kernel
    def hg_forward(x: arr, table: arr, scales: arr, res: arr, sizes: arr, offsets: arr, n_dense: ti.i32, out: arr):
        F = table.shape[1]
        for n in range(x.shape[0]):
            for lvl in range(scales.shape[0]):
                i0, w = cell(x, n, scales[lvl])
                for c in ti.static(range(8)):
                    wc = corner_weight(w, c)
                    row = corner_row(i0, c, res[lvl], sizes[lvl], lvl < n_dense, offsets[lvl])
                    for f in range(F):
                        out[n, lvl * F + f] = out[n, lvl * F + f] + wc * table[row, f]

    @ti.kernel
    def hg_backward(x: arr, g: arr, scales: arr, res: arr, sizes: arr, offsets: arr, n_dense: ti.i32, grad: arr):
        F = grad.shape[1]
        for lvl in range(scales.shape[0]):
            for n in range(x.shape[0]):
                i0, w = cell(x, n, scales[lvl])
                for c in ti.static(range(8)):
                    wc = corner_weight(w, c)
                    row = corner_row(i0, c, res[lvl], sizes[lvl], lvl < n_dense, offsets[lvl])
                    for f in range(F):
                        grad[row, f] = grad[row, f] + wc * g[n, lvl * F + f]

    @ti.kernel
    def bl_forward(means: arr, conics: arr, opac: arr, colors: arr, offsets: arr, ids: arr, tiles_x: ti.i32,
                   ts: ti.i32, width: ti.i32, height: ti.i32, bg: arr, rgb: arr, T_out: arr):
        for t in range(offsets.shape[0] - 1):
            for p in range(ts * ts):
                ix, iy = (t % tiles_x) * ts + p % ts, (t // tiles_x) * ts + p // ts
                if ix < width and iy < height:
                    px, py = ix + 0.5, iy + 0.5
                    T = 1.0
                    c = ti.Vector([0.0, 0.0, 0.0])
                    for i in range(offsets[t], offsets[t + 1]):
                        gi = ids[i]
                        dx, dy = means[gi, 0] - px, means[gi, 1] - py
                        e = 0.5 * (conics[gi, 0] * dx * dx + conics[gi, 2] * dy * dy) + conics[gi, 1] * dx * dy
                        if e < 0:
                            continue
                        a = ti.min(MAX_ALPHA, opac[gi] * ti.exp(-e))
                        if a < ALPHA_MIN:
                            continue
                        Tn = T * (1 - a)
                        if Tn <= T_MIN:
                            break
                        c += a * T * ti.Vector([colors[gi, 0], colors[gi, 1], colors[gi, 2]])
                        T = Tn
                    for k in ti.static(range(3)):
                        rgb[iy, ix, k] = c[k] + T * bg[k]
                    T_out[iy, ix] = T

    @ti.kernel
    def bl_partials(means: arr, conics: arr, opac: arr, colors: arr, offsets: arr, ids: arr, tiles_x: ti.i32,
                    ts: ti.i32, width: ti.i32, height: ti.i32, g_rgb: arr, tail0: arr, part: arr):
        for t in range(offsets.shape[0] - 1):
            for p in range(ts * ts):
                ix, iy = (t % tiles_x) * ts + p % ts, (t // tiles_x) * ts + p // ts
                if ix < width and iy < height:
                    px, py = ix + 0.5, iy + 0.5
                    g = ti.Vector([g_rgb[iy, ix, 0], g_rgb[iy, ix, 1], g_rgb[iy, ix, 2]])
                    T, pre, tail_0 = 1.0, 0.0, tail0[iy, ix]
                    for i in range(offsets[t], offsets[t + 1]):
                        gi = ids[i]
                        A, B, C = conics[gi, 0], conics[gi, 1], conics[gi, 2]
                        dx, dy = means[gi, 0] - px, means[gi, 1] - py
                        e = 0.5 * (A * dx * dx + C * dy * dy) + B * dx * dy
                        if e < 0:
                            continue
                        G = ti.exp(-e)
                        raw = opac[gi] * G
                        a = ti.min(MAX_ALPHA, raw)
                        if a < ALPHA_MIN:
                            continue
                        Tn = T * (1 - a)
                        if Tn <= T_MIN:
                            break
                        w = a * T
                        gc = g.dot(ti.Vector([colors[gi, 0], colors[gi, 1], colors[gi, 2]]))
                        pre += w * gc
                        ga = 0.0
                        if raw < MAX_ALPHA:
                            ga = T * gc - (tail_0 - pre) / (1 - a)
                        ge = -ga * a
                        part[i, 0] = part[i, 0] + ge * (A * dx + B * dy)
                        part[i, 1] = part[i, 1] + ge * (C * dy + B * dx)
                        part[i, 2] = part[i, 2] + 0.5 * ge * dx * dx
                        part[i, 3] = part[i, 3] + ge * dx * dy
                        part[i, 4] = part[i, 4] + 0.5 * ge * dy * dy
                        part[i, 5] = part[i, 5] + ga * G
                        for k in ti.static(range(3)):
                            part[i, 6 + k] = part[i, 6 + k] + w * g[k]
                        T = Tn

    @ti.kernel
    def reduce_partials(ids: arr, part: arr, out: arr):
        ti.loop_config(serialize=True)
        for i in range(ids.shape[0]):
            for k in range(part.shape[1]):
                out[ids[i], k] = out[ids[i], k] + part[i, k]

    return dict(hg_forward=hg_forward, hg_backward=hg_backward, bl_forward=bl_forward, bl_partials=bl_partials,
                reduce_partials=reduce_partials)


# ----------------------------------------------------------------------------- measurement (child)

INPUTS = {"hashgrid": hashgrid_inputs, "blend": blend_inputs}
REFERENCE = {"hashgrid": torch_hashgrid, "blend": torch_blend}
OUTPUT_NAMES = {"hashgrid": ["out", "d_table"],
                "blend": ["rgb", "alpha", "d_means2d", "d_conics", "d_opacities", "d_colors"]}
TOLERANCE = 1e-3  # max |candidate - reference| / max |reference|, per output


def factory(name: str, cache_dir: str) -> dict:
    """The candidate's ``hashgrid``/``blend`` callables (inputs dict -> outputs and gradients),
    its ``version`` and optionally ``set_threads(n)`` (called when the thread count changes)."""
    if name == "torch":
        return dict(REFERENCE, version=f"torch {torch.__version__}")
    if name == "taichi":
        return taichi_candidate(cache_dir)
    return {"numba": numba_candidate, "cpp": cpp_candidate, "compile": compile_candidate}[name]()


def compare(outs: list[torch.Tensor], refs: list[torch.Tensor], names: list[str]) -> dict:
    """Relative max error of each output against the reference."""
    errs = {}
    for name, a, b in zip(names, outs, refs):
        a, b = a.reshape(b.shape).double(), b.double()
        errs[name] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    return errs


def first_line(e: BaseException) -> str:
    """``Type: first line`` of an exception, shortened, with the interpreter prefix elided."""
    text = str(e).strip().replace(sys.prefix, "<python>")
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:160]


def child(args) -> dict:
    """Run one candidate in this (fresh) process; the returned dict goes to ``--result``."""
    res: dict = {"candidate": args.child, "workloads": {}}
    work = args.workloads.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    inputs = {w: INPUTS[w]() for w in work}
    refs = torch.load(args.refs)
    torch.set_num_threads(threads[0])
    t0 = time.perf_counter()
    try:
        cand = factory(args.child, args.cache)
    except Exception as e:
        traceback.print_exc()
        res["error"] = first_line(e)
        return res
    res["setup_s"], res["version"] = time.perf_counter() - t0, cand["version"]
    for w in work:
        r = res["workloads"][w] = {}
        try:
            t = time.perf_counter()
            outs = cand[w](inputs[w])
            r["first_call_s"] = time.perf_counter() - t
        except Exception as e:
            traceback.print_exc()
            r["error"] = first_line(e)
            continue
        r["rel_err"] = compare(outs, refs[w], OUTPUT_NAMES[w])
        r["matches_reference"] = max(r["rel_err"].values()) < TOLERANCE
    if args.first_use_only:
        return res
    for w in work:
        r = res["workloads"][w]
        if "error" in r:
            continue
        results = {}
        r["median_s"] = {}
        for n in threads:
            torch.set_num_threads(n)
            if "set_threads" in cand:
                cand["set_threads"](n)
            t = time.perf_counter()
            outs = cand[w](inputs[w])
            # the first call at n threads is a warm-up when it recompiles, else a timed repeat
            times = [] if "set_threads" in cand else [time.perf_counter() - t]
            results[n] = [o.clone() for o in outs]
            while len(times) < args.repeats:
                t = time.perf_counter()
                cand[w](inputs[w])
                times.append(time.perf_counter() - t)
            r["median_s"][str(n)] = statistics.median(times)
        first = results[threads[0]]
        r["bit_identical_across_threads"] = all(
            all(torch.equal(a, b) for a, b in zip(first, results[n])) for n in threads[1:])
    return res


# ----------------------------------------------------------------------------- driver (parent)

def run_child(name: str, args, cache: str, first_use_only: bool, env_extra: dict | None = None) -> dict:
    """Run a candidate in a fresh interpreter with its compile caches under ``cache``."""
    env = dict(os.environ, FIELDFORGE_KERNELS="torch", NUMBA_CACHE_DIR=os.path.join(cache, "numba"),
               TORCH_EXTENSIONS_DIR=os.path.join(cache, "torch_extensions"),
               TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"), **(env_extra or {}))
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--child", name, "--cache", os.path.join(cache, "taichi"),
               "--result", out.name, "--refs", args.refs, "--workloads", args.workloads, "--threads", args.threads,
               "--repeats", str(args.repeats)] + (["--first-use-only"] if first_use_only else [])
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"candidate": name, "error": f"timed out after {args.timeout:.0f} s", "workloads": {}}
        wall = time.perf_counter() - t
        text = Path(out.name).read_text()
    if proc.returncode or not text:
        tail = (proc.stderr or proc.stdout).strip().replace(sys.prefix, "<python>").splitlines()[-1:] or ["no output"]
        return {"candidate": name, "error": f"exit {proc.returncode}: {tail[0][:160]}", "workloads": {},
                "process_s": wall}
    res = json.loads(text)
    res["process_s"] = wall
    if "error" in res or any("error" in r for r in res["workloads"].values()):
        res["stderr_tail"] = proc.stderr.strip().replace(sys.prefix, "<python>").splitlines()[-3:]
    return res


def first_use(res: dict) -> float | None:
    """Setup plus the first call of every workload (where compilation happens), seconds."""
    if "error" in res or any("error" in r for r in res["workloads"].values()):
        return None
    return res["setup_s"] + sum(r["first_call_s"] for r in res["workloads"].values())


def measure(name: str, args) -> dict:
    """Cold process (empty caches, full timing), warm process (same caches), and a no-compiler
    process (empty caches, CXX/CC pointing nowhere)."""
    with tempfile.TemporaryDirectory() as cache:
        cold = run_child(name, args, cache, first_use_only=False)
        warm = run_child(name, args, cache, first_use_only=True)
    entry = {"cold": cold, "warm": warm, "first_use_cold_s": first_use(cold), "first_use_warm_s": first_use(warm),
             "install": INSTALL[name]}
    if name != "torch":
        with tempfile.TemporaryDirectory() as cache:
            nocc = run_child(name, args, cache, first_use_only=True,
                             env_extra={"CXX": "/nonexistent/c++", "CC": "/nonexistent/cc"})
        entry["without_compiler"] = "works" if first_use(nocc) is not None else \
            nocc.get("error") or next(r["error"] for r in nocc["workloads"].values() if "error" in r)
    else:
        entry["without_compiler"] = "works"
    return entry


def fmt(x: float | None, scale: float = 1e3, digits: int = 0) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


def table(report: dict, threads: list[str]) -> str:
    """Markdown: per candidate, workload medians (ms) and speed-up over torch per thread count."""
    work = report["workloads"]
    base = report["candidates"].get("torch", {}).get("cold", {}).get("workloads", {})
    head = ["candidate"]
    for w in work:
        head += [f"{w} ms ({t} thr)" for t in threads] + [f"{w} vs torch ({t} thr)" for t in threads]
    head += ["first use cold s", "first use warm s", "thread-count independent", "without C++ compiler"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in report["candidates"].items():
        cells = [name]
        det = []
        for w in work:
            r = e["cold"].get("workloads", {}).get(w, {})
            med = r.get("median_s", {})
            ref = base.get(w, {}).get("median_s", {})
            cells += [fmt(med.get(t)) for t in threads]
            cells += [f"{ref[t] / med[t]:.1f}x" if ref.get(t) and med.get(t) else "-" for t in threads]
            det.append("yes" if r.get("bit_identical_across_threads") else "no" if med else "-")
            if "error" in r or not r.get("matches_reference", True):
                cells[-1] += " (error)" if "error" in r else " (mismatch)"
        cells += [fmt(e["first_use_cold_s"], 1, 1), fmt(e["first_use_warm_s"], 1, 1), "/".join(det),
                  "works" if e["without_compiler"] == "works" else "fails (see JSON)"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma list of " + ", ".join(CANDIDATES))
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of " + ", ".join(WORKLOADS))
    p.add_argument("--threads", default="2,1", help="thread counts to time (the first is the reference count)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median kept)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per candidate process")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "kernel_spike.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--refs", help=argparse.SUPPRESS)
    p.add_argument("--first-use-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        Path(args.result).write_text(json.dumps(child(args)))
        return 0
    names = [c for c in args.candidates.split(",") if c]
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        p.error(f"unknown candidates {sorted(unknown)}")
    report = {"workloads": {"hashgrid": HASHGRID, "blend": BLEND}, "threads": args.threads, "repeats": args.repeats,
              "tolerance_rel": TOLERANCE, "not_measured": NOT_MEASURED, "candidates": {}}
    report["workloads"] = {w: report["workloads"][w] for w in args.workloads.split(",")}
    os.environ["FIELDFORGE_KERNELS"] = "torch"  # fieldforge's own fast paths off: the reference is pure PyTorch
    with tempfile.TemporaryDirectory() as tmp:
        args.refs = os.path.join(tmp, "references.pt")
        torch.save({w: REFERENCE[w](INPUTS[w]()) for w in args.workloads.split(",")}, args.refs)
        for name in names:
            print(f"[kernel_spike] {name} ...", file=sys.stderr, flush=True)
            report["candidates"][name] = measure(name, args)
            report["table"] = table(report, args.threads.split(","))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n")  # partial results survive
    print(report["table"])
    for name, why in NOT_MEASURED.items():
        print(f"\n{name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
