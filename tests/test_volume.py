"""Packed volume rendering against nerfacc's CPU dense functions and closed forms."""

import math

import pytest
import torch

from fieldforge.render.volume import (accumulate_along_rays, composite, distortion, exclusive_segment_cumsum,
                                      render_visibility_from_density, render_weight_from_density)

nerfacc = pytest.importorskip("nerfacc")


def _random_packed(n_rays=37, n_samples=23):
    t = torch.sort(torch.rand(n_rays, n_samples + 1) * 4, dim=-1).values
    t_starts, t_ends = t[:, :-1], t[:, 1:]
    sigmas = torch.rand(n_rays, n_samples) * 3
    ray_indices = torch.arange(n_rays).repeat_interleave(n_samples)
    return t_starts, t_ends, sigmas, ray_indices


def test_weights_match_nerfacc_dense():
    t_starts, t_ends, sigmas, ray_indices = _random_packed()
    w_ref, T_ref, a_ref = nerfacc.render_weight_from_density(t_starts, t_ends, sigmas)
    w, T, a = render_weight_from_density(t_starts.reshape(-1), t_ends.reshape(-1), sigmas.reshape(-1),
                                         ray_indices, t_starts.shape[0])
    torch.testing.assert_close(w, w_ref.reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(T, T_ref.reshape(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a, a_ref.reshape(-1), atol=1e-6, rtol=1e-5)


def test_weights_with_ragged_rays_match_per_ray_dense():
    torch.manual_seed(3)
    counts = torch.tensor([0, 5, 1, 12, 0, 7])
    ray_indices = torch.arange(len(counts)).repeat_interleave(counts)
    S = int(counts.sum())
    t_starts = torch.rand(S)
    t_ends = t_starts + torch.rand(S) * 0.5
    sigmas = torch.rand(S) * 4
    w, T, _ = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, len(counts))
    s = 0
    for c in counts.tolist():
        if c:
            w_ref, T_ref, _ = nerfacc.render_weight_from_density(t_starts[s:s + c][None], t_ends[s:s + c][None],
                                                                 sigmas[s:s + c][None])
            torch.testing.assert_close(w[s:s + c], w_ref[0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(T[s:s + c], T_ref[0], atol=1e-6, rtol=1e-5)
        s += c


def test_visibility_matches_nerfacc_dense():
    t_starts, t_ends, sigmas, ray_indices = _random_packed()
    sigmas = sigmas * 5
    ref = nerfacc.render_visibility_from_density(t_starts, t_ends, sigmas, early_stop_eps=1e-2, alpha_thre=0.05)
    got = render_visibility_from_density(t_starts.reshape(-1), t_ends.reshape(-1), sigmas.reshape(-1), ray_indices,
                                         t_starts.shape[0], early_stop_eps=1e-2, alpha_thre=0.05)
    assert torch.equal(got, ref.reshape(-1))


def test_accumulate_matches_nerfacc():
    S, R = 200, 17
    ray_indices = torch.sort(torch.randint(R, (S,))).values
    w, v = torch.rand(S), torch.rand(S, 3)
    ref = nerfacc.accumulate_along_rays(w, v, ray_indices, R)
    torch.testing.assert_close(accumulate_along_rays(w, ray_indices, R, v), ref)


def test_gradients_match_nerfacc_dense():
    t_starts, t_ends, sigmas, ray_indices = _random_packed(5, 9)
    s1 = sigmas.clone().requires_grad_(True)
    s2 = sigmas.clone().reshape(-1).requires_grad_(True)
    g = torch.rand(5, 9)
    (nerfacc.render_weight_from_density(t_starts, t_ends, s1)[0] * g).sum().backward()
    (render_weight_from_density(t_starts.reshape(-1), t_ends.reshape(-1), s2, ray_indices, 5)[0]
     * g.reshape(-1)).sum().backward()
    torch.testing.assert_close(s2.grad, s1.grad.reshape(-1), atol=1e-6, rtol=1e-5)


def test_constant_density_closed_form_and_background():
    # one ray through a homogeneous slab of length L: opacity = 1 - exp(-sigma L), colour and depth exact
    sigma, L, n = 1.7, 2.0, 4000
    t = torch.linspace(1.0, 1.0 + L, n + 1, dtype=torch.float64)
    ri = torch.zeros(n, dtype=torch.long)
    rgb = torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64).expand(n, 3)
    bg = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    out = composite(t[:-1], t[1:], ri, 1, torch.full((n,), sigma, dtype=torch.float64), rgb, bg)
    op = 1 - math.exp(-sigma * L)
    assert abs(float(out["opacity"]) - op) < 1e-12
    exp_rgb = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64) * op + bg * (1 - op)
    torch.testing.assert_close(out["rgb"][0], exp_rgb)
    # expected depth: integral of t sigma exp(-sigma (t-1)) dt over [1, 1+L] / opacity (midpoint rule, O(h^2))
    num = (1 / sigma + 1) - math.exp(-sigma * L) * (1 + L + 1 / sigma)
    assert abs(float(out["depth"]) - num / op) < 1e-5


def test_exclusive_cumsum_float64_for_long_rays():
    v = torch.full((200000,), 1e-3)
    ri = torch.zeros(200000, dtype=torch.long)
    out = exclusive_segment_cumsum(v, ri, 1)
    assert abs(float(out[-1]) - 199.999) < 1e-3


def test_distortion_matches_the_double_sum_and_its_gradient():
    g = torch.Generator().manual_seed(3)
    counts = [0, 1, 5, 12, 2]
    ray_indices = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    starts = torch.cat([torch.sort(torch.rand(c, generator=g, dtype=torch.float64)).values for c in counts])
    ends = starts + 0.05 * torch.rand(len(starts), generator=g, dtype=torch.float64)
    w = torch.rand(len(starts), generator=g, dtype=torch.float64, requires_grad=True)

    def brute(w):
        mid, out = (starts + ends) / 2, []
        for r in range(len(counts)):
            sel = ray_indices == r
            ww, mm = w[sel], mid[sel]
            out.append((ww[:, None] * ww[None] * (mm[:, None] - mm[None]).abs()).sum()
                       + (ww ** 2 * (ends - starts)[sel]).sum() / 3)
        return torch.stack(out)

    fast = distortion(w, starts, ends, ray_indices, len(counts))
    torch.testing.assert_close(fast, brute(w), rtol=1e-12, atol=1e-12)
    assert fast[0] == 0 and fast[1] == w[0] ** 2 * (ends[0] - starts[0]) / 3
    grad_fast, = torch.autograd.grad(fast.sum(), w)
    grad_brute, = torch.autograd.grad(brute(w).sum(), w)
    torch.testing.assert_close(grad_fast, grad_brute, rtol=1e-10, atol=1e-12)
    # one interval holding all the weight scores lower than the same weight spread along the ray
    one = distortion(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.4, 0.8]), torch.tensor([0.1, 0.5, 0.9]),
                     torch.zeros(3, dtype=torch.long), 1)
    spread = distortion(torch.full((3,), 1 / 3), torch.tensor([0.0, 0.4, 0.8]), torch.tensor([0.1, 0.5, 0.9]),
                        torch.zeros(3, dtype=torch.long), 1)
    assert float(one) < float(spread)
