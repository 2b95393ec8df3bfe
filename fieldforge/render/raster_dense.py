"""Dense brute-force compositor: every pixel against every Gaussian, plain autograd.

The independent reference for the tile rasterizer (tests, ``fieldforge bench splat``): no
tiles, no custom backward. Gaussians are sorted once by depth; per pixel the alphas of all
Gaussians are formed, skipped below 1/255, and T is a running product; a Gaussian is kept
while the product including it stays above 1e-4 (gsplat's stop-and-exclude rule). Pixels are
processed in chunks under activation checkpointing, so memory is O(chunk x N) and the cost is
O(H W N): usable only for small scenes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from fieldforge.render.raster_composite import MAX_ALPHA, T_THRESHOLD
from fieldforge.render.raster_project import ALPHA_THRESHOLD


def _pixels(pix: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, bg: Tensor):
    d = means2d[None, :, :] - pix[:, None, :]  # [p, N, 2], mean - pixel centre
    e = 0.5 * (conics[:, 0] * d[..., 0] ** 2 + conics[:, 2] * d[..., 1] ** 2) + conics[:, 1] * d[..., 0] * d[..., 1]
    alpha = torch.clamp(opacities * torch.exp(-e), max=MAX_ALPHA)
    alpha = torch.where((e >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    T_incl = torch.cumprod(1 - alpha, dim=1)
    kept = T_incl > T_THRESHOLD
    alpha = torch.where(kept, alpha, torch.zeros_like(alpha))
    T_incl = torch.cumprod(1 - alpha, dim=1)
    T_before = torch.cat([torch.ones_like(T_incl[:, :1]), T_incl[:, :-1]], 1)
    w = alpha * T_before
    T_final = T_incl[:, -1:] if T_incl.shape[1] else torch.ones_like(pix[:, :1])
    return w @ colors + T_final * bg, 1 - T_final


def composite_dense(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, depths: Tensor,
                    background: Tensor, width: int, height: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Composite N visible Gaussians ([N, 2], [N, 3], [N], [N, D], depths [N]) onto ``background``
    [D]: returns colour [H, W, D] and alpha [H, W, 1]."""
    order = torch.argsort(depths.detach(), stable=True)
    m, c, o, col = means2d[order], conics[order], opacities[order], colors[order]
    dev = means2d.device
    jj, ii = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
    pix = torch.stack([ii.reshape(-1), jj.reshape(-1)], -1).to(means2d.dtype) + 0.5
    rgb, alpha = [], []
    for p in pix.split(chunk):
        r, a = checkpoint(_pixels, p, m, c, o, col, background, use_reentrant=False)
        rgb.append(r)
        alpha.append(a)
    return torch.cat(rgb).reshape(height, width, -1), torch.cat(alpha).reshape(height, width, 1)
