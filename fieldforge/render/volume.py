"""Volume-rendering weights and accumulation on packed samples (nerfacc semantics).

Packed samples: flat tensors over all samples of a batch of rays, with ``ray_indices`` [S]
non-decreasing (the samples of one ray are contiguous and ordered front to back), and
intervals [t_starts, t_ends] in world units along unit-direction rays.

    delta_i = t_end_i - t_start_i,  alpha_i = 1 - exp(-sigma_i delta_i)
    T_i = exp(-sum_{j<i, same ray} sigma_j delta_j)   (exclusive sum, not a product of 1 - alpha)
    w_i = T_i alpha_i
"""

from __future__ import annotations

import torch
from torch import Tensor

from fieldforge import kernels


def exclusive_segment_cumsum(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Exclusive cumulative sum of ``values`` [S] restarting at each ray (float64 inside)."""
    if values.numel() == 0:
        return values
    v64 = values.double()
    inclusive = torch.cumsum(v64, 0)
    exclusive = inclusive - v64
    # subtract the running total at each ray's first sample
    first = torch.ones_like(ray_indices, dtype=torch.bool)
    first[1:] = ray_indices[1:] != ray_indices[:-1]
    start_vals = torch.zeros(n_rays, dtype=torch.float64, device=values.device)
    start_vals[ray_indices[first]] = exclusive[first]
    return (exclusive - start_vals[ray_indices]).to(values.dtype)


def pass_weights(sd: Tensor, ray_indices: Tensor, n_rays: int, log_t: Tensor, early_stop_eps: float,
                 alpha_thre: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """The compositing terms of one marching pass over samples [K] grouped by ray (a ray's samples
    contiguous, front to back; ``ray_indices`` in [0, n_rays)): ``sd`` = sigma delta (float32),
    ``log_t`` (float64) the -log transmittance of each sample's ray before the pass. Returns

    - ``sd`` with the samples of alpha = 1 - exp(-sd) < ``alpha_thre`` set to 0 (a new tensor),
    - ``sel`` [M]: the composited samples, T_i = exp(-(log_t + exclusive sum of sd)) >=
      ``early_stop_eps`` (compared in float32, the exclusive sum rounded to float32) and sd_i > 0,
    - ``w`` [M]: their weights T_i (1 - exp(-sd_i)), computed in float64, returned as float32.

    Float32 CPU tensors take the kernel of :mod:`fieldforge.kernels.volume` (one part of the
    rays per thread)."""
    if sd.dtype == torch.float32 and log_t.dtype == torch.float64 and kernels.enabled(sd, ray_indices, log_t):
        try:
            from fieldforge.kernels import volume as fused
            return fused.pass_weights(sd, ray_indices, log_t, early_stop_eps, alpha_thre)
        except kernels.Unavailable:
            pass
    if alpha_thre > 0:
        sd = torch.where(1 - torch.exp(-sd) < alpha_thre, torch.zeros_like(sd), sd)
    log_trans = log_t + exclusive_segment_cumsum(sd, ray_indices, n_rays).double()
    sel = torch.nonzero((torch.exp(-log_trans.float()) >= early_stop_eps) & (sd > 0))[:, 0]
    w = (torch.exp(-log_trans[sel]) * (1 - torch.exp(-sd[sel].double()))).to(sd.dtype)
    return sd, sel, w


def _fast(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor, *values: Tensor) -> bool:
    """Whether the fused kernels of :mod:`fieldforge.kernels.volume` apply: float32 CPU tensors and
    sample bounds without gradients."""
    floats = (t_starts, t_ends, *values)
    return (all(t.dtype == torch.float32 for t in floats) and not (t_starts.requires_grad or t_ends.requires_grad)
            and kernels.enabled(ray_indices, *floats))


def render_weight_from_density(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Weights, transmittance and alpha [S] of packed samples from densities [S]."""
    if _fast(ray_indices, t_starts, t_ends, sigmas):
        try:
            from fieldforge.kernels import volume as fused

            return fused.render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
        except kernels.Unavailable:
            pass
    sigma_dt = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sigma_dt)
    trans = torch.exp(-exclusive_segment_cumsum(sigma_dt, ray_indices, n_rays))
    return trans * alphas, trans, alphas


def render_visibility_from_density(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int,
    early_stop_eps: float = 1e-4, alpha_thre: float = 0.0,
) -> Tensor:
    """Mask [S] of samples that matter: T_i >= early_stop_eps and alpha_i >= alpha_thre."""
    _, trans, alphas = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    mask = trans >= early_stop_eps
    if alpha_thre > 0:
        mask &= alphas >= alpha_thre
    return mask


def accumulate_along_rays(weights: Tensor, ray_indices: Tensor, n_rays: int, values: Tensor | None = None) -> Tensor:
    """Sum of ``weights * values`` per ray -> [n_rays, C] (C = 1 when ``values`` is None)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros(n_rays, src.shape[-1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def composite(
    t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int,
    sigmas: Tensor, rgbs: Tensor, background: Tensor | None = None,
    extras: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Composite packed samples into per-ray outputs.

    Returns "rgb" [R, 3] (background blended as rgb + bg * (1 - opacity)), "opacity" [R, 1],
    "depth" [R, 1] (expected depth sum(w t_mid) / max(opacity, 1e-10)), "depth_acc" [R, 1]
    (un-normalised sum(w t_mid)), "weights" [S], and each extra channel accumulated.
    """
    values = {"rgbs": rgbs, "t_mid": ((t_starts + t_ends) / 2)[:, None],
              **{f"extras[{k!r}]": v for k, v in (extras or {}).items()}}
    weights, opacity, sums = _weights_and_sums(t_starts, t_ends, ray_indices, n_rays, sigmas, values)
    rgb, depth_acc = sums["rgbs"], sums["t_mid"]
    if background is not None:
        rgb = rgb + background.to(rgb) * (1.0 - opacity)
    out = {"rgb": rgb, "opacity": opacity, "depth": depth_acc / opacity.clamp_min(1e-10),
           "depth_acc": depth_acc, "weights": weights}
    for name in extras or {}:
        out[name] = sums[f"extras[{name!r}]"]
    return out


def _weights_and_sums(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int, sigmas: Tensor,
                      values: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Weights [S], opacity [R, 1] and the weighted sum [R, C] of each value [S, C] per ray."""
    if _fast(ray_indices, t_starts, t_ends, sigmas, *values.values()):
        try:
            from fieldforge.kernels import volume as fused

            return fused.composite_sums(t_starts, t_ends, ray_indices, n_rays, sigmas, values)
        except kernels.Unavailable:
            pass
    weights, _, _ = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    opacity = accumulate_along_rays(weights, ray_indices, n_rays)
    return weights, opacity, {k: accumulate_along_rays(weights, ray_indices, n_rays, v) for k, v in values.items()}


def distortion(weights: Tensor, s_starts: Tensor, s_ends: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Distortion loss per ray [R] of packed samples (Mip-NeRF 360, arXiv:2111.12077, eq. 15):

        L = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (s_end_i - s_start_i),

    with m the interval midpoints in the (normalised) distance ``s`` the caller chooses. Small when
    each ray's weight gathers in one short interval: it removes floaters and fog. Evaluated in
    O(S) with exclusive per-ray sums (for samples sorted front to back, the double sum is
    2 sum_i w_i (m_i W_i - (wm)_i) with W_i, (wm)_i the sums of w and w m before i).
    """
    if weights.numel() == 0:
        return weights.new_zeros(n_rays)
    m = (s_starts + s_ends) / 2
    before_w = exclusive_segment_cumsum(weights, ray_indices, n_rays)
    before_wm = exclusive_segment_cumsum(weights * m, ray_indices, n_rays)
    per_sample = 2 * weights * (m * before_w - before_wm) + weights ** 2 * (s_ends - s_starts) / 3
    return weights.new_zeros(n_rays).index_add(0, ray_indices, per_sample)
