"""Packed volume compositing, forward and backward: the fast path of
:func:`fieldforge.render.volume.render_weight_from_density` and
:func:`fieldforge.render.volume.composite` (nerfacc semantics, "Nerfacc: Efficient Sampling
Accelerates NeRFs", arXiv:2305.04966; the quadrature of "NeRF: Representing Scenes as Neural
Radiance Fields for View Synthesis", arXiv:2003.08934).

Per ray, samples i in front-to-back order, with tau_i = sigma_i delta_i (float32),
S_i = sum_{j<i} tau_j (float64, as the reference's exclusive sum), T_i = exp(-S_i),
alpha_i = 1 - exp(-tau_i), w_i = T_i alpha_i, and accumulated values
A_c = sum_i w_i v_ic, opacity O = sum_i w_i (float32 sums in sample order).

Backward, for output gradients gw_i, gT_i, galpha_i, gO, gA_c: with
g_i = gw_i + gO + sum_c gA_c v_ic (the total gradient on w_i), since dw_i/dtau_k is
T_i exp(-tau_i) for k = i, -w_i for k < i and 0 for k > i (and dT_i/dtau_k = -T_i for k < i),

    dL/dtau_k = (g_k T_k + galpha_k) exp(-tau_k) - sum_{i>k} (g_i w_i + gT_i T_i),
    dL/dsigma_k = delta_k dL/dtau_k,   dL/dv_kc = w_k gA_c,

evaluated back to front with a float64 suffix sum. One thread per ray (rays write disjoint
samples and outputs), so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange
from torch import Tensor

from fieldforge import kernels
from fieldforge.kernels._jit import jit, pjit


@jit
def _offsets(ray_indices, n_rays, out):
    """``out[r]`` = first sample of ray r (``out[n_rays]`` = S); False unless ``ray_indices`` is
    non-decreasing within [0, n_rays)."""
    prev = 0  # the next ray whose first sample is not yet known
    for i in range(ray_indices.shape[0]):
        r = ray_indices[i]
        if r < prev - 1 or r < 0 or r >= n_rays:
            return False
        while prev <= r:
            out[prev] = i
            prev += 1
    while prev <= n_rays:
        out[prev] = ray_indices.shape[0]
        prev += 1
    return True


@pjit
def _forward(t_starts, t_ends, sigmas, values, offsets, weights, trans, alphas, opacity, acc):
    for r in prange(offsets.shape[0] - 1):
        s_excl = 0.0
        op = np.float32(0.0)
        for i in range(offsets[r], offsets[r + 1]):
            tau = sigmas[i] * (t_ends[i] - t_starts[i])
            a = np.float32(1.0) - np.exp(-tau)
            t = np.float32(np.exp(-s_excl))
            w = t * a
            trans[i], alphas[i], weights[i] = t, a, w
            op += w
            for c in range(values.shape[1]):
                acc[r, c] += w * values[i, c]
            s_excl += np.float64(tau)
        opacity[r] = op


@pjit
def _backward(t_starts, t_ends, sigmas, values, offsets, trans, alphas, g_w, g_t, g_a, g_op, g_acc, d_sigmas,
              d_values):
    for r in prange(offsets.shape[0] - 1):
        suffix = 0.0  # sum over later samples of g_i w_i + gT_i T_i
        for i in range(offsets[r + 1] - 1, offsets[r] - 1, -1):
            delta = t_ends[i] - t_starts[i]
            tau = sigmas[i] * delta
            w = trans[i] * alphas[i]
            g = np.float64(g_w[i]) + g_op[r]
            for c in range(values.shape[1]):
                g += np.float64(g_acc[r, c]) * values[i, c]
                d_values[i, c] = w * g_acc[r, c]
            d_tau = (g * trans[i] + g_a[i]) * np.exp(-np.float64(tau)) - suffix
            d_sigmas[i] = np.float32(d_tau * delta)
            suffix += g * w + np.float64(g_t[i]) * trans[i]


class _Composite(torch.autograd.Function):
    """(weights, trans, alphas [S], opacity [R], acc [R, C]) of packed samples; see the module."""

    @staticmethod
    def forward(ctx, t_starts, t_ends, sigmas, values, offsets):
        S, R = t_starts.shape[0], offsets.shape[0] - 1
        weights, trans, alphas = (torch.empty(S) for _ in range(3))
        opacity, acc = torch.empty(R), torch.zeros(R, values.shape[1])
        arrays = [x.detach().contiguous().numpy() for x in (t_starts, t_ends, sigmas, values, offsets)]
        kernels.call(_forward, *arrays, weights.numpy(), trans.numpy(), alphas.numpy(), opacity.numpy(), acc.numpy())
        ctx.save_for_backward(t_starts, t_ends, sigmas, values, offsets, trans, alphas)
        ctx.mark_non_differentiable(offsets)
        return weights, trans, alphas, opacity, acc

    @staticmethod
    def backward(ctx, g_w, g_t, g_a, g_op, g_acc):
        t_starts, t_ends, sigmas, values, offsets, trans, alphas = ctx.saved_tensors
        d_sigmas, d_values = torch.empty_like(sigmas), torch.empty_like(values)
        arrays = [x.detach().contiguous().numpy() for x in (t_starts, t_ends, sigmas, values, offsets, trans, alphas,
                                                            g_w, g_t, g_a, g_op, g_acc)]
        kernels.call(_backward, *arrays, d_sigmas.numpy(), d_values.numpy())
        return None, None, d_sigmas, d_values, None


@pjit
def _pass_weights(sd, ray_indices, log_t, early_stop_eps, alpha_thre, bounds, sel, w, counts):
    """One marching pass (see :func:`pass_weights`) over the parts [bounds[p], bounds[p + 1]) in
    parallel (each starts a ray): zeroes sd below alpha_thre in place, writes part p's composited
    samples' indices and weights to sel and w from bounds[p] on, and their number to counts[p]."""
    for part in prange(bounds.shape[0] - 1):
        lo, n = bounds[part], 0
        s_excl = 0.0
        for i in range(lo, bounds[part + 1]):
            if i == lo or ray_indices[i] != ray_indices[i - 1]:
                s_excl = 0.0
            tau = sd[i]
            if alpha_thre > 0 and np.float32(1.0) - np.exp(-tau) < alpha_thre:
                tau = np.float32(0.0)
                sd[i] = tau
            log_trans = log_t[i] + np.float64(np.float32(s_excl))  # the exclusive sum rounded to float32
            if np.exp(-np.float32(log_trans)) >= early_stop_eps and tau > 0:
                sel[lo + n] = i
                w[lo + n] = np.float32(np.exp(-log_trans) * (1.0 - np.exp(-np.float64(tau))))
                n += 1
            s_excl += np.float64(tau)
        counts[part] = n


def _parts(rays: np.ndarray, n: int) -> np.ndarray:
    """Bounds [n + 1] of n parts of ``rays`` of about equal length, each starting a run of equal
    ray indices (a part may be empty)."""
    k, bounds = len(rays), [0]
    for p in range(1, n):
        c = max(k * p // n, bounds[-1])
        if 0 < c < k:
            later = np.flatnonzero(rays[c:] != rays[c - 1])
            c = c + int(later[0]) if len(later) else k
        bounds.append(c)
    return np.array([*bounds, k], np.int64)


def pass_weights(sd: Tensor, ray_indices: Tensor, log_t: Tensor, early_stop_eps: float,
                 alpha_thre: float) -> tuple[Tensor, Tensor, Tensor]:
    """The fast path of :func:`fieldforge.render.volume.pass_weights` (float32 ``sd``, float64
    ``log_t``, CPU): float64 sums restarting at each ray, the samples split into one part per
    thread at ray starts (every ray in one part: the results do not depend on the split)."""
    if sd.dim() != 1 or ray_indices.shape != sd.shape or log_t.shape != sd.shape:
        raise ValueError(f"pass_weights: sd, ray_indices and log_t must be [K], got {list(sd.shape)}, "
                         f"{list(ray_indices.shape)}, {list(log_t.shape)}")
    sd = sd.clone()
    k = len(sd)
    rays = kernels.as_array(ray_indices, torch.int64, "ray_indices", "pass_weights")
    bounds = _parts(rays, kernels.threads())
    sel, w = torch.empty(k, dtype=torch.int64), torch.empty(k, dtype=torch.float32)
    counts = np.zeros(len(bounds) - 1, np.int64)
    kernels.call(_pass_weights, kernels.as_array(sd, torch.float32, "sd", "pass_weights"), rays,
                 kernels.as_array(log_t, torch.float64, "log_t", "pass_weights"), np.float32(early_stop_eps),
                 np.float32(alpha_thre), bounds, sel.numpy(), w.numpy(), counts)
    keep = [slice(int(b), int(b + n)) for b, n in zip(bounds[:-1], counts)]
    return sd, torch.cat([sel[s] for s in keep]), torch.cat([w[s] for s in keep])


def _check(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int, kernel: str,
           values: dict[str, Tensor]) -> Tensor:
    """Validate packed inputs (ValueError naming the argument); the per-ray sample offsets [R + 1]."""
    S = t_starts.shape[0] if t_starts.dim() == 1 else -1
    for name, t in (("t_starts", t_starts), ("t_ends", t_ends), ("sigmas", sigmas), ("ray_indices", ray_indices)):
        if t.dim() != 1 or t.shape[0] != S:
            raise ValueError(f"{kernel}: {name} must have shape [S] like t_starts, got {list(t.shape)}")
    for name, v in values.items():
        if v.dim() != 2 or v.shape[0] != S:
            raise ValueError(f"{kernel}: {name} must have shape [S, C] with S = {S}, got {list(v.shape)}")
    offsets = torch.empty(n_rays + 1, dtype=torch.int64)
    if not kernels.call(_offsets, kernels.as_array(ray_indices, torch.int64, "ray_indices", kernel), n_rays,
                        offsets.numpy()):
        raise ValueError(f"{kernel}: ray_indices must be non-decreasing and in [0, n_rays = {n_rays})")
    return offsets


def render_weight_from_density(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor,
                               n_rays: int) -> tuple[Tensor, Tensor, Tensor]:
    """Weights, transmittance and alpha [S], float32 (gradients to ``sigmas``)."""
    offsets = _check(t_starts, t_ends, sigmas, ray_indices, n_rays, "render_weight_from_density", {})
    w, trans, alphas, _, _ = _Composite.apply(t_starts, t_ends, sigmas, sigmas.new_zeros(len(sigmas), 0), offsets)
    return w, trans, alphas


def composite_sums(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int, sigmas: Tensor,
                   values: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Weights [S], opacity [R, 1] and sum_i w_i v_i [R, C] of every named value [S, C], float32
    (gradients to ``sigmas`` and the values)."""
    offsets = _check(t_starts, t_ends, sigmas, ray_indices, n_rays, "composite", values)
    names, sizes = list(values), [v.shape[1] for v in values.values()]
    stacked = torch.cat(list(values.values()), 1) if values else sigmas.new_zeros(len(sigmas), 0)
    w, _, _, opacity, acc = _Composite.apply(t_starts, t_ends, sigmas, stacked, offsets)
    return w, opacity[:, None], dict(zip(names, acc.split(sizes, 1)))
