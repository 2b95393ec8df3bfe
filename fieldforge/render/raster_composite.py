"""Tile-based front-to-back alpha compositing of projected Gaussians, with a custom backward.

Per pixel (evaluated at its centre, +0.5) the tile's depth-sorted Gaussians are walked front
to back with gsplat's rules: e = 0.5 (a dx^2 + c dy^2) + b dx dy with (dx, dy) = mean - pixel;
alpha = min(0.99, o exp(-e)); skip if e < 0 or alpha < 1/255; stop, excluding the Gaussian,
once T (1 - alpha) <= 1e-4. Output colour = sum w_i c_i + T_final * background, alpha =
1 - T_final.

Work is vectorised over (tile, slot, pixel) blocks: tiles are processed in chunks and the
tiles' sorted lists in batches of ``slots`` Gaussians, carrying T between batches; tiles whose
pixels have all stopped are dropped. Memory is bounded by ``max_block`` elements per temporary.
The backward pass reruns the same loop (identical skip/stop decisions) and uses
dL/dalpha_i = T_i g.c_i - (g.(C - C_<=i) + (g.bg - g_alpha) T_final) / (1 - alpha_i).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fieldforge import kernels
from fieldforge.render.raster_project import ALPHA_THRESHOLD
from fieldforge.render.raster_tiles import TileBins

MAX_ALPHA = 0.99
T_THRESHOLD = 1e-4


class _Block:
    """Alphas and transmittances of one (tiles, slots, pixels) block, shared by forward and backward."""

    def __init__(self, g: Tensor, valid: Tensor, px: Tensor, py: Tensor, T0: Tensor, done: Tensor,
                 means2d: Tensor, conics: Tensor, opacities: Tensor):
        self.g = g
        self.dx = means2d[g, 0][..., None] - px[:, None, :]
        self.dy = means2d[g, 1][..., None] - py[:, None, :]
        A, B, C = conics[g].unbind(-1)
        self.A, self.B, self.C = A[..., None], B[..., None], C[..., None]
        e = 0.5 * (self.A * self.dx ** 2 + self.C * self.dy ** 2) + self.B * self.dx * self.dy
        self.G = torch.exp(-e)
        self.o = torch.where(valid, opacities[g], 0.0)
        raw = self.o[..., None] * self.G
        self.unclamped = raw < MAX_ALPHA
        a = raw.clamp(max=MAX_ALPHA)
        keep = (e >= 0) & (a >= ALPHA_THRESHOLD) & ~done[:, None, :]
        self.a = torch.where(keep, a, 0.0)
        T_incl = T0[:, None, :] * torch.cumprod(1 - self.a, 1)
        alive = T_incl > T_THRESHOLD
        self.inc = keep & alive
        self.stopped = (keep & ~alive).any(1)
        self.T_before = torch.cat([T0[:, None, :], T_incl[:, :-1]], 1)
        self.w = torch.where(self.inc, self.a * self.T_before, 0.0)
        inf = torch.full_like(T_incl, float("inf"))
        self.T_end = torch.minimum(T0, torch.where(alive, T_incl, inf).amin(1))


def _walk(bins: TileBins, slots: int, max_block: int, dev: torch.device):
    """Yield ``(tiles, px, py, start, length)`` per chunk of non-empty tiles: pixel centres
    [t, P] and each tile's slice of ``bins.ids``; chunks hold about ``max_block`` // (slots P) tiles."""
    ts = bins.tile_size
    counts = bins.counts
    tiles = torch.nonzero(counts > 0).squeeze(1)
    lp = torch.arange(ts * ts, device=dev)
    per_chunk = max(1, max_block // (slots * ts * ts))
    for chunk in tiles.split(per_chunk) if len(tiles) else ():  # split() of an empty tensor yields one empty chunk
        px = ((chunk % bins.tiles_x) * ts)[:, None] + (lp % ts)[None] + 0.5
        py = ((chunk // bins.tiles_x) * ts)[:, None] + (lp // ts)[None] + 0.5
        yield chunk, px.float(), py.float(), bins.offsets[chunk], counts[chunk]


def _slot_batches(start: Tensor, length: Tensor, done: Tensor, ids: Tensor, slots: int):
    """Yield (rows, g, valid) per batch of ``slots`` list entries, for rows not yet finished."""
    dev = start.device
    s = torch.arange(slots, device=dev)
    for s0 in range(0, int(length.max()), slots):
        rows = torch.nonzero((length > s0) & ~done.all(1)).squeeze(1)
        if rows.numel() == 0:
            return
        slot = s0 + s[None]
        valid = slot < length[rows, None]
        g = ids[(start[rows, None] + slot).clamp(max=ids.numel() - 1)]
        yield rows, g, valid


def _inside(px: Tensor, py: Tensor, width: int, height: int) -> Tensor:
    return (px < width) & (py < height)


def _composite_forward(means2d, conics, opacities, colors, bins, width, height, slots, max_block):
    """Tile-major colour accumulation [tiles, P, D] and final transmittance [tiles, P]."""
    dev, D = means2d.device, colors.shape[-1]
    P = bins.tile_size ** 2
    n_tiles = bins.tiles_x * bins.tiles_y
    acc = torch.zeros(n_tiles, P, D, device=dev, dtype=colors.dtype)
    T_out = torch.ones(n_tiles, P, device=dev, dtype=colors.dtype)
    for chunk, px, py, start, length in _walk(bins, slots, max_block, dev):
        T = torch.ones(len(chunk), P, device=dev, dtype=colors.dtype)
        C = torch.zeros(len(chunk), P, D, device=dev, dtype=colors.dtype)
        done = ~_inside(px, py, width, height)
        for rows, g, valid in _slot_batches(start, length, done, bins.ids, slots):
            blk = _Block(g, valid, px[rows], py[rows], T[rows], done[rows], means2d, conics, opacities)
            C[rows] += torch.einsum("tsp,tsd->tpd", blk.w, colors[g])
            T[rows] = blk.T_end
            done[rows] |= blk.stopped
        acc[chunk] = C
        T_out[chunk] = T
    return acc, T_out


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, bins, width, height, slots, max_block):
        acc, T = _composite_forward(means2d, conics, opacities, colors, bins, width, height, slots, max_block)
        ctx.save_for_backward(means2d, conics, opacities, colors, background, acc, T)
        ctx.cfg = (bins, width, height, slots, max_block)
        return acc + T[..., None] * background, 1 - T

    @staticmethod
    def backward(ctx, g_rgb, g_alpha):
        means2d, conics, opacities, colors, background, acc, T_fin = ctx.saved_tensors
        bins, width, height, slots, max_block = ctx.cfg
        dev = means2d.device
        g_means = torch.zeros_like(means2d)
        g_conics = torch.zeros_like(conics)
        g_opac = torch.zeros_like(opacities)
        g_colors = torch.zeros_like(colors)
        g_bg = (g_rgb * T_fin[..., None]).sum((0, 1))
        # g . (C_total) + (g . bg - g_alpha) T_final: the part of every tail sum that is known upfront
        g_tail0 = (g_rgb * acc).sum(-1) + ((g_rgb * background).sum(-1) - g_alpha) * T_fin
        P = bins.tile_size ** 2
        for chunk, px, py, start, length in _walk(bins, slots, max_block, dev):
            T = torch.ones(len(chunk), P, device=dev, dtype=colors.dtype)
            done = ~_inside(px, py, width, height)
            g_pre = torch.zeros(len(chunk), P, device=dev, dtype=colors.dtype)  # g . C_<i, carried
            gr, tail0 = g_rgb[chunk], g_tail0[chunk]
            for rows, g, valid in _slot_batches(start, length, done, bins.ids, slots):
                blk = _Block(g, valid, px[rows], py[rows], T[rows], done[rows], means2d, conics, opacities)
                gc = torch.einsum("tpd,tsd->tsp", gr[rows], colors[g])
                wgc = blk.w * gc
                g_incl = g_pre[rows][:, None, :] + torch.cumsum(wgc, 1)
                tail = tail0[rows][:, None, :] - g_incl
                ga = torch.where(blk.inc & blk.unclamped, blk.T_before * gc - tail / (1 - blk.a), 0.0)
                ge = -ga * blk.a  # dL/de, since alpha = o exp(-e)
                gx = ge * (blk.A * blk.dx + blk.B * blk.dy)
                gy = ge * (blk.C * blk.dy + blk.B * blk.dx)
                flat = g.reshape(-1)
                g_means.index_add_(0, flat, torch.stack([gx.sum(-1), gy.sum(-1)], -1).reshape(-1, 2))
                g_conics.index_add_(0, flat, torch.stack([
                    0.5 * (ge * blk.dx ** 2).sum(-1), (ge * blk.dx * blk.dy).sum(-1),
                    0.5 * (ge * blk.dy ** 2).sum(-1)], -1).reshape(-1, 3))
                g_opac.index_add_(0, flat, (ga * blk.G).sum(-1).reshape(-1))
                g_colors.index_add_(0, flat, torch.einsum("tsp,tpd->tsd", blk.w, gr[rows]).reshape(-1, colors.shape[-1]))
                g_pre[rows] = g_incl[:, -1]
                T[rows] = blk.T_end
                done[rows] |= blk.stopped
        return g_means, g_conics, g_opac, g_colors, g_bg, None, None, None, None, None


def composite_tiles(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, background: Tensor,
                    bins: TileBins, width: int, height: int, slots: int = 32,
                    max_block: int = 1 << 21) -> tuple[Tensor, Tensor]:
    """Composite one image. Inputs are [M, 2], [M, 3], [M], [M, D] and ``background`` [D];
    ``bins`` from :func:`bin_tiles` over the same M Gaussians. Returns colour [H, W, D] and
    alpha [H, W, 1]; differentiable w.r.t. all five tensors. On float32 CPU tensors the fast
    path (:mod:`fieldforge.kernels.blend`) computes the same image and gradients.
    """
    _check(means2d, conics, opacities, colors, background, bins, width, height)
    tensors = (means2d, conics, opacities, colors, background)
    if kernels.enabled(*tensors) and all(t.dtype == torch.float32 for t in tensors):
        try:
            from fieldforge.kernels.blend import Composite

            return Composite.apply(*tensors, bins.offsets, bins.ids, bins.tiles_x, bins.tile_size, width, height,
                                   (ALPHA_THRESHOLD, MAX_ALPHA, T_THRESHOLD))
        except kernels.Unavailable:
            pass
    rgb, alpha = _Composite.apply(means2d, conics, opacities, colors, background, bins, width, height, slots, max_block)
    return _untile(rgb, bins, width, height), _untile(alpha[..., None], bins, width, height)


def _check(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, background: Tensor,
           bins: TileBins, width: int, height: int) -> None:
    m = means2d.shape[0] if means2d.ndim == 2 else -1
    d = colors.shape[1] if colors.ndim == 2 else -1
    for name, t, shape in (("means2d", means2d, (m, 2)), ("conics", conics, (m, 3)), ("opacities", opacities, (m,)),
                           ("colors", colors, (m, d)), ("background", background, (d,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"composite_tiles: {name} must be {list(shape)} (means2d [M, 2], colors [M, D]), "
                             f"got {list(t.shape)}")
    if (bins.tiles_x != -(-int(width) // bins.tile_size) or bins.tiles_y != -(-int(height) // bins.tile_size)
            or bins.offsets.shape != (bins.tiles_x * bins.tiles_y + 1,)):
        raise ValueError(f"composite_tiles: bins ({bins.tiles_x}x{bins.tiles_y} tiles of {bins.tile_size} px) "
                         f"do not cover a {width}x{height} image")


def _untile(x: Tensor, bins: TileBins, width: int, height: int) -> Tensor:
    """[tiles, ts*ts, D] tile-major -> [H, W, D] image."""
    ts = bins.tile_size
    img = x.reshape(bins.tiles_y, bins.tiles_x, ts, ts, -1).permute(0, 2, 1, 3, 4)
    return img.reshape(bins.tiles_y * ts, bins.tiles_x * ts, -1)[:height, :width]
