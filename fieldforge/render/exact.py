"""Exact volume rendering for densities that are piecewise linear along each ray.

Input is packed pieces in nerfacc style (see render/volume.py): ``ray_indices`` [S]
non-decreasing, pieces of one ray contiguous and front to back, [t_starts, t_ends] in world
units along unit-direction rays, with the density and colour at both ends of each piece
(sigma affine on the piece, sigma >= 0). On piece k with tau_k = delta (sigma_k + sigma_k+1) / 2:

    T_k = exp(-sum_{j<k} tau_j),  w_k = T_k - T_k+1  (exact opacity weights)
    colour affine on the piece, c(t) = c_k + q (t - t_k):
      int T sigma c dt = T_k (c_k - exp(-tau_k) c_k+1 + q I_k),
      I_k = int_0^delta exp(-(sigma_k s + m s^2 / 2)) ds
    with I_k by 16-point Gauss-Legendre when tau_k <= 4 (error < 1e-15 relative) and by the
    erfcx (m > 0), Dawson (m < 0) or exponential (m = 0) closed forms otherwise.
Depth is the same integral with c(t) = t. Without end colours the colour is piecewise
constant (c_k on the piece) and the result is sum_k w_k c_k.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fieldforge.fields.piecewise import as_layers, evaluate, ray_breakpoints
from fieldforge.render.volume import accumulate_along_rays, exclusive_segment_cumsum

_GL_X, _GL_W = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(16))
GL_TAU_MAX = 4.0


class _Dawson(torch.autograd.Function):
    """Dawson's integral D(x) = exp(-x^2) int_0^x exp(v^2) dv (scipy), with D' = 1 - 2 x D."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        import scipy.special  # 0.2 s to import: only when used

        y = torch.from_numpy(scipy.special.dawsn(x.detach().cpu().double().numpy())).to(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, y = ctx.saved_tensors
        return grad * (1 - 2 * x * y)


def transmittance_integral(sigma0: Tensor, slope: Tensor, delta: Tensor) -> Tensor:
    """I = int_0^delta exp(-(sigma0 s + slope s^2 / 2)) ds for sigma0 >= 0, sigma0 + slope delta >= 0."""
    tau = delta * (sigma0 + 0.5 * slope * delta)
    small = tau <= GL_TAU_MAX
    # Gauss-Legendre on [0, delta]
    s = 0.5 * delta[..., None] * (_GL_X.to(delta) + 1)
    gl = 0.5 * delta * (_GL_W.to(delta) * torch.exp(-(sigma0[..., None] * s + 0.5 * slope[..., None] * s * s))).sum(-1)
    # closed forms, evaluated on safe inputs where they are not used (keeps gradients finite)
    big = ~small
    pos, neg = big & (slope > 0), big & (slope < 0)
    zero = big & (slope == 0)
    e_tau = torch.exp(-tau)
    m_p = torch.where(pos, slope, 1.0)
    a0 = torch.where(pos, sigma0, 1.0) / torch.sqrt(2 * m_p)
    a1 = a0 + torch.where(pos, delta, 1.0) * torch.sqrt(m_p / 2)
    i_pos = torch.sqrt(torch.pi / (2 * m_p)) * (torch.special.erfcx(a0) - e_tau * torch.special.erfcx(a1))
    m_n = torch.where(neg, -slope, 1.0)
    u0 = torch.where(neg, sigma0, 1.0) / torch.sqrt(2 * m_n)
    u1 = (u0 - torch.where(neg, delta, 0.0) * torch.sqrt(m_n / 2)).clamp_min(0)
    i_neg = torch.sqrt(2 / m_n) * (_Dawson.apply(u0) - e_tau * _Dawson.apply(u1))
    i_zero = -torch.expm1(-tau) / torch.where(zero, sigma0, 1.0)
    out = torch.where(small, gl, torch.where(pos, i_pos, torch.where(neg, i_neg, i_zero)))
    return out


def exact_composite(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int,
                    sigma_starts: Tensor, sigma_ends: Tensor, rgb_starts: Tensor | None = None,
                    rgb_ends: Tensor | None = None, background: Tensor | None = None) -> dict[str, Tensor]:
    """Exact compositing of packed pieces with affine density (and affine or constant colour).

    sigma_* are [S] (>= 0), rgb_* [S, 3]. Returns "rgb" [R, 3] (with background blended as
    rgb + bg (1 - opacity)), "opacity" [R, 1], "transmittance" [R, 1] (= 1 - opacity),
    "depth" [R, 1] (expected depth / max(opacity, 1e-10)), "depth_acc" [R, 1], "weights" [S].
    """
    delta = t_ends - t_starts
    tau = 0.5 * delta * (sigma_starts + sigma_ends)
    trans = torch.exp(-exclusive_segment_cumsum(tau, ray_indices, n_rays))
    e_tau = torch.exp(-tau)
    weights = trans * -torch.expm1(-tau)
    has_len = delta > 0
    slope = torch.where(has_len, (sigma_ends - sigma_starts) / torch.where(has_len, delta, 1.0), 0.0)
    I = transmittance_integral(sigma_starts, slope, delta)
    opacity = accumulate_along_rays(weights, ray_indices, n_rays)
    depth_piece = trans * (t_starts - e_tau * t_ends + I)
    depth_acc = accumulate_along_rays(depth_piece, ray_indices, n_rays)
    out = {"opacity": opacity, "transmittance": 1 - opacity, "depth_acc": depth_acc,
           "depth": depth_acc / opacity.clamp_min(1e-10), "weights": weights}
    if rgb_starts is not None:
        if rgb_ends is None:
            rgb = accumulate_along_rays(weights, ray_indices, n_rays, rgb_starts)
        else:
            q = torch.where(has_len[:, None], (rgb_ends - rgb_starts) / torch.where(has_len, delta, 1.0)[:, None], 0.0)
            piece = trans[:, None] * (rgb_starts - e_tau[:, None] * rgb_ends + q * I[:, None])
            rgb = torch.zeros(n_rays, piece.shape[-1], dtype=piece.dtype).index_add(0, ray_indices, piece)
        if background is not None:
            rgb = rgb + background.to(rgb) * (1 - opacity)
        out["rgb"] = rgb
    return out


def render_rays_exact(field, origins: Tensor, directions: Tensor, t_near: Tensor | float, t_far: Tensor | float,
                      background: Tensor | None = None, max_pieces: int = 4096) -> dict[str, Tensor]:
    """Exact rendering of a CPWL field (e.g. :class:`~fieldforge.fields.piecewise.PLField`, or a
    CPWL network whose output 0 is density >= 0 and outputs 1..3 colour) along rays.

    Splits every ray at all breakpoints of the network (so density and colour are affine on each
    piece) and calls :func:`exact_composite`. Adds "n_pieces" [R]. Gradients flow to the weights
    through the values at the breakpoints (breakpoints detached; exact for continuous fields).
    """
    layers = as_layers(field)
    t, n_pieces = ray_breakpoints(layers, origins, directions, t_near, t_far, max_pieces)
    o, d = origins.detach().double(), directions.detach().double()
    h = evaluate(layers, o[:, None] + t[..., None] * d[:, None])  # [R, P+1, C]
    if float(h[..., 0].detach().min()) < -1e-6:
        raise ValueError("output 0 of the network must be a density >= 0 (end the density with a ReLU)")
    dt = t[:, 1:] - t[:, :-1]
    ray, k = torch.nonzero(dt > 0, as_tuple=True)
    dtype = h.dtype
    rgb0 = h[ray, k, 1:4] if h.shape[-1] >= 4 else None
    rgb1 = h[ray, k + 1, 1:4] if h.shape[-1] >= 4 else None
    out = exact_composite(t[ray, k].to(dtype), t[ray, k + 1].to(dtype), ray, origins.shape[0],
                          h[ray, k, 0].clamp_min(0), h[ray, k + 1, 0].clamp_min(0), rgb0, rgb1, background)
    out["n_pieces"] = n_pieces
    return out
