"""Front-to-back alpha blending of tile-sorted Gaussians, forward and backward (fast path of
:func:`fieldforge.render.raster_composite.composite_tiles`).

Per pixel (evaluated at its centre, +0.5) the tile's depth-sorted list is walked with gsplat's
rules ("gsplat: An Open-Source Library for Gaussian Splatting", arXiv:2409.06765; "3D Gaussian
Splatting for Real-Time Radiance Field Rendering", arXiv:2308.04079): e = 0.5 (a dx^2 + c dy^2)
+ b dx dy with (dx, dy) = mean - pixel and conic (a, b, c); alpha = min(max_alpha, o exp(-e));
skip if e < 0 or alpha < alpha_threshold; stop, excluding the Gaussian, once T (1 - alpha) <=
t_threshold. Colour = sum w_i c_i + T_final bg over D channels, alpha = 1 - T_final.

Tiles are dealt to the threads round robin, forward and backward (neighbouring tiles, which cost
alike, go to different threads, so an object in one part of the image leaves no thread idle).
Forward: a tile's work writes that tile's pixels only. The tile's list is walked once, front to
back; each Gaussian visits the tile's rows inside the bounding box of its ellipse alpha >=
alpha_threshold, each row over the tile's whole width with the pixels outside the box masked
(branch-free, with exp written as a polynomial: the loop vectorises), so the work is about the
number of (tile row, Gaussian) overlaps. Each pixel keeps its final transmittance and
the number of list entries up to its last blended one (gsplat's ``last_ids``). Backward: the list
is walked back to front from the deepest such entry; each pixel, from its own last entry on,
recovers T_i = T_{i+1} / (1 - alpha_i) and the colour behind (float64), and the entry's gradients
are summed over the tile's pixels into one row per (tile, Gaussian) intersection, which has one
writer. The rows are then summed per Gaussian in intersection order. Both results are thus
independent of the thread count. A clamped alpha passes no gradient to the opacity or the
Gaussian's shape, as in the reference.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from fieldforge import kernels
from fieldforge.kernels._jit import jit, pjit, pow2

# packed row per intersection: mean x, mean y, conic a, b, c, opacity, e-cutoff, half extents x, y, colour[D]
_GEOM = 9
# partial-gradient row per intersection: d mean x, d mean y, d conic a, b, c, d opacity, d colour[D]
_GRAD = 6


@pjit
def _pack(ids, means2d, conics, opacities, colors, alpha_threshold, packed):
    """One row per intersection (its Gaussian's), with two conservative early skips: the e-cutoff
    L = log(o / alpha_threshold) + 1e-3 (beyond it alpha < alpha_threshold for sure) and the half
    extents (pixels) of the ellipse e <= L (infinite for a conic that is not positive definite).
    The exact alpha test follows for every pixel that passes them."""
    for k in numba.prange(ids.size):
        i = ids[k]
        o = np.float64(opacities[i])
        a, b, c = np.float64(conics[i, 0]), np.float64(conics[i, 1]), np.float64(conics[i, 2])
        cutoff = np.log(max(o, 1e-30) / alpha_threshold) + 1e-3
        det = a * c - b * b
        if cutoff < 0:
            ex = ey = -1.0
        elif a > 0 and det > 0:
            ex, ey = np.sqrt(2 * cutoff * c / det) * 1.0001 + 1e-3, np.sqrt(2 * cutoff * a / det) * 1.0001 + 1e-3
        else:
            ex = ey = np.inf
        packed[k, 0], packed[k, 1] = means2d[i, 0], means2d[i, 1]
        packed[k, 2], packed[k, 3], packed[k, 4] = conics[i, 0], conics[i, 1], conics[i, 2]
        packed[k, 5], packed[k, 6], packed[k, 7], packed[k, 8] = opacities[i], cutoff, ex, ey
        for d in range(colors.shape[1]):
            packed[k, _GEOM + d] = colors[i, d]


@jit(inline="always")
def _span(centre, extent, lo, hi):
    """Pixels x in [lo, hi) whose centre x + 0.5 lies within ``extent`` of ``centre``."""
    if not extent >= 0:
        return lo, lo
    if extent == np.inf:
        return lo, hi
    return max(lo, np.int64(np.ceil(centre - extent - 0.5))), min(hi, np.int64(np.floor(centre + extent - 0.5)) + 1)


@jit(inline="always")
def _exp_neg(e):
    """exp(-e) in float32 for e in [0, 80] (Cephes' expf: Cody-Waite reduction by ln 2, a degree-5
    polynomial, 2^n from its bits; within 1 ulp of exp, tested). Written without
    calls, so that a loop over pixels using it vectorises."""
    x = -e
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375)
    r = r - n * np.float32(-2.12194440e-4)
    q = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
    q = q * r + np.float32(8.3334519073e-3)
    q = q * r + np.float32(4.1665795894e-2)
    q = q * r + np.float32(1.6666665459e-1)
    q = q * r + np.float32(5.0000001201e-1)
    return (q * (r * r) + r + np.float32(1.0)) * pow2(np.int32(n))


@jit(inline="always")
def _alpha(p, px, py, alpha_threshold, max_alpha):
    """(alpha, exp(-e), unclamped, dx, dy) of packed row ``p`` at pixel centre (px, py); alpha = 0
    when the Gaussian is skipped. The forward and backward share it, so they decide alike."""
    dx, dy = p[0] - px, p[1] - py
    e = np.float32(0.5) * (p[2] * dx * dx + p[4] * dy * dy) + p[3] * dx * dy
    if not 0 <= e <= p[6]:  # (written so that NaN is skipped too, as by the reference)
        return np.float32(0.0), np.float32(0.0), False, dx, dy
    g = _exp_neg(e)
    raw = p[5] * g
    if not raw >= alpha_threshold:  # min(raw, max_alpha) < alpha_threshold, since max_alpha > it
        return np.float32(0.0), g, False, dx, dy
    return min(raw, max_alpha), g, raw < max_alpha, dx, dy


@jit
def _forward_tile(t, offsets, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha, t_threshold, rgb,
                  t_final, n_walk):
    """The forward of tile ``t`` (its pixels of rgb, t_final and n_walk only). The tile's state is
    kept in local [rows, cols] buffers; every row a Gaussian reaches is evaluated over the tile's
    full width with the pixels outside its extents masked, so that the loop over a row has a fixed
    length and vectorises (same results as visiting only the pixels inside)."""
    height, width, n_ch = rgb.shape
    s, n = offsets[t], offsets[t + 1] - offsets[t]
    x0, y0 = (t % tiles_x) * tile_size, (t // tiles_x) * tile_size
    tw, th = min(x0 + tile_size, width) - x0, min(y0 + tile_size, height) - y0
    T = np.ones((th, tw), np.float32)  # transmittance; -T once the pixel stopped
    walk = np.zeros((th, tw), np.int32)
    acc = np.zeros((n_ch, th, tw), np.float32)
    w = np.empty(tw, np.float32)
    stops = np.empty(tw, np.int32)  # (counted after the row's loop: a count inside keeps it 4 wide)
    cx = np.empty(tw, np.float32)
    for i in range(tw):
        cx[i] = np.float32(x0 + i) + np.float32(0.5)
    one, zero = np.float32(1.0), np.float32(0.0)
    live = tw * th
    for j in range(n):
        p = packed[s + j]
        xa, xb = _span(p[0], p[7], x0, x0 + tw)
        ya, yb = _span(p[1], p[8], y0, y0 + th)
        if xa >= xb:
            continue
        lo, hi = np.float32(xa) + np.float32(0.5), np.float32(xb) + np.float32(0.5)  # centres in [lo, hi)
        mx, my, ca, cb, cc, o, cut = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
        jj = np.int32(j + 1)
        for y in range(ya - y0, yb - y0):
            dy = my - (np.float32(y0 + y) + np.float32(0.5))
            stopped = np.int32(0)
            for i in range(tw):
                dx = mx - cx[i]
                e = np.float32(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                ec = e if e < np.float32(80.0) else np.float32(80.0)  # (NaN -> 80: masked below)
                ec = ec if ec > zero else zero
                raw = o * _exp_neg(ec)
                a = raw if raw < max_alpha else max_alpha
                Tv = T[y, i]
                t_next = Tv * (one - a)
                ok = (cx[i] >= lo) & (cx[i] < hi) & (e >= zero) & (e <= cut) & (raw >= alpha_threshold) & (Tv >= zero)
                blend = ok & (t_next > t_threshold)
                stop = ok & (t_next <= t_threshold)
                w[i] = a * Tv if blend else zero
                T[y, i] = t_next if blend else (-Tv if stop else Tv)
                walk[y, i] = jj if blend else walk[y, i]
                stops[i] = np.int32(1) if stop else np.int32(0)
            for i in range(tw):
                stopped += stops[i]
            live -= stopped
            for d in range(n_ch):
                c = p[_GEOM + d]
                for i in range(tw):
                    acc[d, y, i] += w[i] * c
        if live == 0:
            break
    for y in range(th):
        for i in range(tw):
            Tv = abs(T[y, i])
            t_final[y0 + y, x0 + i] = Tv
            n_walk[y0 + y, x0 + i] = walk[y, i]
            for d in range(n_ch):
                rgb[y0 + y, x0 + i, d] = acc[d, y, i] + Tv * bg[d]


@pjit
def _forward(offsets, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha, t_threshold,
             rgb, t_final, n_walk, n_workers):
    """rgb [H, W, D], t_final [H, W], n_walk [H, W] (entries up to the last
    blended). Per tile, the list is walked once front to back, each Gaussian visiting the tile's
    live pixels inside its extents; the walk ends when every pixel has stopped."""
    for w in numba.prange(n_workers):  # tiles round robin: neighbouring tiles cost alike
        for t in range(w, offsets.size - 1, n_workers):
            _forward_tile(t, offsets, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha, t_threshold, rgb,
                          t_final, n_walk)


@jit
def _backward_tile(t, offsets, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha, t_final, n_walk, g_rgb,
                   g_alpha, partial, g_bg_tile):
    """The backward of tile ``t`` (the rows of its intersections in ``partial`` and row t of ``g_bg_tile``)."""
    height, width, n_ch = g_rgb.shape
    s = offsets[t]
    x0, y0 = (t % tiles_x) * tile_size, (t // tiles_x) * tile_size
    x1, y1 = min(x0 + tile_size, width), min(y0 + tile_size, height)
    T = np.empty((y1 - y0, x1 - x0))  # transmittance behind the current entry
    g_tail = np.empty((y1 - y0, x1 - x0))  # g . (colour behind it) + (g . bg - g_alpha) T_final
    g_col = np.empty(n_ch)
    deepest = 0
    for d in range(n_ch):
        g_bg_tile[t, d] = 0.0
    for y in range(y0, y1):
        for x in range(x0, x1):
            tf = np.float64(t_final[y, x])
            acc = -np.float64(g_alpha[y, x])
            for d in range(n_ch):
                g_bg_tile[t, d] += g_rgb[y, x, d] * tf
                acc += g_rgb[y, x, d] * bg[d]
            T[y - y0, x - x0] = tf
            g_tail[y - y0, x - x0] = acc * tf
            deepest = max(deepest, n_walk[y, x])
    for j in range(deepest - 1, -1, -1):
        k = s + j
        p = packed[k]
        xa, xb = _span(p[0], p[7], x0, x1)
        ya, yb = _span(p[1], p[8], y0, y1)
        g_mx = g_my = g_ca = g_cb = g_cc = g_o = 0.0
        for d in range(n_ch):
            g_col[d] = 0.0
        for y in range(ya, yb):
            py = np.float32(y) + np.float32(0.5)
            for x in range(xa, xb):
                if j >= n_walk[y, x]:
                    continue
                a, g, unclamped, dx, dy = _alpha(p, np.float32(x) + np.float32(0.5), py, alpha_threshold, max_alpha)
                if a == 0:
                    continue
                inv = 1.0 / (1.0 - np.float64(a))
                Ti = T[y - y0, x - x0] * inv  # transmittance in front of this Gaussian
                w = a * Ti
                gc = 0.0
                for d in range(n_ch):
                    gc += g_rgb[y, x, d] * p[_GEOM + d]
                    g_col[d] += w * g_rgb[y, x, d]
                g_a = Ti * gc - g_tail[y - y0, x - x0] * inv  # dL/dalpha
                g_tail[y - y0, x - x0] += w * gc
                T[y - y0, x - x0] = Ti
                if unclamped:
                    g_e = -g_a * a  # alpha = o exp(-e)
                    g_mx += g_e * (p[2] * dx + p[3] * dy)
                    g_my += g_e * (p[4] * dy + p[3] * dx)
                    g_ca += 0.5 * g_e * dx * dx
                    g_cb += g_e * dx * dy
                    g_cc += 0.5 * g_e * dy * dy
                    g_o += g_a * g
        partial[k, 0], partial[k, 1], partial[k, 2] = g_mx, g_my, g_ca
        partial[k, 3], partial[k, 4], partial[k, 5] = g_cb, g_cc, g_o
        for d in range(n_ch):
            partial[k, _GRAD + d] = g_col[d]


@pjit
def _backward(offsets, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha, t_final, n_walk,
              g_rgb, g_alpha, partial, g_bg_tile, n_workers):
    """Per-intersection partial gradients ``partial`` [n_isects, 6 + D] (zeros on entry) and
    per-tile background gradients ``g_bg_tile`` [tiles, D]. Per tile, the list is walked back to
    front from the deepest blended entry; each pixel takes part from its own last blended entry on."""
    for w in numba.prange(n_workers):
        for t in range(w, offsets.size - 1, n_workers):
            _backward_tile(t, offsets, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha, t_final, n_walk,
                           g_rgb, g_alpha, partial, g_bg_tile)


@jit
def _by_gaussian(ids, n):
    """Counting sort of the intersections by Gaussian (stable): Gaussian i's intersections are
    order[start[i]:start[i + 1]], in increasing intersection index."""
    start = np.zeros(n + 1, np.int64)
    for k in range(ids.size):
        start[ids[k] + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    cursor = start[:-1].copy()
    order = np.empty(ids.size, np.int64)
    for k in range(ids.size):
        order[cursor[ids[k]]] = k
        cursor[ids[k]] += 1
    return start, order


@pjit
def _reduce(start, order, partial, g_bg_tile, grads, g_bg):
    """grads[i] = sum of Gaussian i's partial rows, in intersection order; g_bg = sum over tiles
    in tile order (float64). Fixed orders, so the sums do not depend on the thread count."""
    cols = partial.shape[1]
    for i in numba.prange(start.size - 1):
        for c in range(cols):
            grads[i, c] = 0.0
        for j in range(start[i], start[i + 1]):
            k = order[j]
            for c in range(cols):
                grads[i, c] += partial[k, c]
    for d in range(g_bg.size):
        acc = 0.0
        for t in range(g_bg_tile.shape[0]):
            acc += g_bg_tile[t, d]
        g_bg[d] = acc


class Composite(torch.autograd.Function):
    """(means2d [M, 2], conics [M, 3], opacities [M], colors [M, D], background [D], offsets,
    ids, tiles_x, tile_size, width, height, rules) -> colour [H, W, D], alpha [H, W, 1], float32;
    ``rules`` = (alpha_threshold, max_alpha, t_threshold)."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, offsets, ids, tiles_x, tile_size,
                width, height, rules):
        name = "composite_tiles"
        f32 = torch.float32
        alpha_threshold, max_alpha, t_threshold = (np.float32(v) for v in rules)
        n_ch = colors.shape[1]
        ids_np = kernels.as_array(ids, torch.int64, "bins.ids", name)
        packed = np.empty((ids_np.size, _GEOM + n_ch), np.float32)
        kernels.call(_pack, ids_np, kernels.as_array(means2d, f32, "means2d", name),
                     kernels.as_array(conics, f32, "conics", name), kernels.as_array(opacities, f32, "opacities", name),
                     kernels.as_array(colors, f32, "colors", name), alpha_threshold, packed)
        bg = kernels.as_array(background, f32, "background", name)
        offsets_np = kernels.as_array(offsets, torch.int64, "bins.offsets", name)
        rgb = torch.empty(height, width, n_ch, dtype=f32)
        t_final = torch.empty(height, width, dtype=f32)
        n_walk = torch.empty(height, width, dtype=torch.int32)
        kernels.call(_forward, offsets_np, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha,
                     t_threshold, rgb.numpy(), t_final.numpy(), n_walk.numpy(), kernels.threads())
        ctx.state = (offsets_np, ids_np, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha,
                     means2d.shape[0])
        ctx.save_for_backward(t_final, n_walk)
        return rgb, (1 - t_final)[..., None]

    @staticmethod
    def backward(ctx, g_rgb, g_alpha):
        offsets, ids, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha, m = ctx.state
        t_final, n_walk = ctx.saved_tensors
        n_ch = bg.size
        partial = np.zeros((ids.size, _GRAD + n_ch), np.float32)
        g_bg_tile = np.empty((offsets.size - 1, n_ch), np.float64)
        name = "composite_tiles backward"
        kernels.call(_backward, offsets, packed, bg, tiles_x, tile_size, alpha_threshold, max_alpha,
                     t_final.numpy(), n_walk.numpy(), kernels.as_array(g_rgb, torch.float32, "grad colour", name),
                     kernels.as_array(g_alpha[..., 0], torch.float32, "grad alpha", name), partial, g_bg_tile,
                     kernels.threads())
        start, order = kernels.call(_by_gaussian, ids, m)
        grads = torch.empty(m, _GRAD + n_ch, dtype=torch.float32)
        g_bg = torch.empty(n_ch, dtype=torch.float32)
        kernels.call(_reduce, start, order, partial, g_bg_tile, grads.numpy(), g_bg.numpy())
        return (grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, _GRAD:], g_bg,
                None, None, None, None, None, None, None)
