"""Exact piecewise-linear volume rendering against dense quadrature, scipy and the packed compositor."""

from __future__ import annotations

import math

import pytest
import scipy.integrate
import torch

from fieldforge.fields.pl_field import PLField
from fieldforge.render.exact import exact_composite, render_rays_exact, transmittance_integral
from fieldforge.render.volume import composite


@pytest.mark.parametrize("sigma0,slope,delta", [
    (0.0, 0.0, 1.0), (1e-9, 0.0, 0.3), (2.0, 1e-9, 3.0),  # sigma -> 0, m -> 0
    (0.5, 3.0, 0.7), (5.0, 3.0, 2.0), (0.0, 40.0, 1.0),  # m > 0: quadrature and erfcx branches
    (1.0, -0.9, 1.0), (10.0, -4.0, 2.0), (8.0, -8.0, 1.0),  # m < 0: quadrature and Dawson branches
    (3.0, 0.0, 5.0), (4.0, 2.0, 1e-7),  # m = 0 closed form, tiny delta
])
def test_transmittance_integral_branches_match_scipy_quad(sigma0, slope, delta):
    ref, _ = scipy.integrate.quad(lambda s: math.exp(-(sigma0 * s + 0.5 * slope * s * s)),
                                  0.0, delta, epsabs=0, epsrel=1e-13)
    got = transmittance_integral(*(torch.tensor([v], dtype=torch.float64) for v in (sigma0, slope, delta)))
    assert abs(float(got) / ref - 1) < 1e-11


def _field() -> PLField:
    torch.manual_seed(0)
    field = PLField(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), width=16, depth=2).double()
    with torch.no_grad():
        field.mlp.net[-1].bias.copy_(torch.tensor([1.5, 0.5, 0.5, 0.5]))
        field.mlp.net[-1].weight.mul_(4.0)
    return field


def test_exact_transmittance_colour_and_depth_match_1e5_sample_quadrature():
    field = _field()
    g = torch.Generator().manual_seed(1)
    R = 6
    o = torch.rand(R, 3, generator=g, dtype=torch.float64) * 0.4 - torch.tensor([0.2, 0.2, 1.8], dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.randn(R, 3, generator=g, dtype=torch.float64) * 0.2
                                      + torch.tensor([0.0, 0, 1], dtype=torch.float64), dim=-1)
    near, far = 0.5, 3.0
    out = render_rays_exact(field, o, d, near, far)
    assert int(out["n_pieces"].min()) > 3
    N = 100_000
    t = torch.linspace(near, far, N + 1, dtype=torch.float64)
    with torch.no_grad():
        f = field(o[:, None] + t[:, None] * d[:, None], d[:, None].expand(-1, N + 1, -1))
    sigma, rgb = f["density"][..., 0], f["rgb"]
    dt = t[1] - t[0]
    tau = torch.cat([torch.zeros(R, 1, dtype=torch.float64), torch.cumsum(0.5 * dt * (sigma[:, 1:] + sigma[:, :-1]), 1)], 1)
    T = torch.exp(-tau)
    integrand = torch.cat([T[..., None] * sigma[..., None] * rgb, (T * sigma * t)[..., None]], -1)
    ref = torch.trapezoid(integrand, dx=float(dt), dim=1)
    assert float(T[:, -1].min()) < 0.9 and float(T[:, -1].max()) > 0.01  # non-trivial attenuation
    assert torch.allclose(out["transmittance"][:, 0], T[:, -1], rtol=1e-7, atol=1e-9)
    assert torch.allclose(out["opacity"][:, 0], 1 - T[:, -1], rtol=1e-7, atol=1e-9)
    assert torch.allclose(out["rgb"], ref[:, :3], rtol=1e-6, atol=1e-8)
    assert torch.allclose(out["depth_acc"][:, 0], ref[:, 3], rtol=1e-6, atol=1e-8)


def test_constant_pieces_match_packed_compositor():
    g = torch.Generator().manual_seed(2)
    counts = torch.tensor([3, 1, 5])
    ray = torch.repeat_interleave(torch.arange(3), counts)
    S = int(counts.sum())
    dt = torch.rand(S, generator=g, dtype=torch.float64) + 0.1
    ends = torch.cumsum(dt, 0)
    starts = ends - dt
    sigma = torch.rand(S, generator=g, dtype=torch.float64) * 3
    rgb = torch.rand(S, 3, generator=g, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    ours = exact_composite(starts, ends, ray, 3, sigma, sigma, rgb, None, bg)
    ref = composite(starts, ends, ray, 3, sigma, rgb, bg)
    for k in ("rgb", "opacity", "weights"):
        assert torch.allclose(ours[k], ref[k], rtol=1e-12, atol=1e-14)


def test_exact_composite_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(3)
    ray = torch.tensor([0, 0, 0, 1, 1])
    starts = torch.tensor([0.0, 0.4, 1.5, 0.0, 2.0], dtype=torch.float64)
    ends = torch.tensor([0.4, 1.5, 3.0, 2.0, 3.5], dtype=torch.float64)
    inputs = [torch.rand(5, generator=g, dtype=torch.float64) * 4, torch.rand(5, generator=g, dtype=torch.float64) * 4,
              torch.rand(5, 3, generator=g, dtype=torch.float64), torch.rand(5, 3, generator=g, dtype=torch.float64)]
    inputs = [x.requires_grad_(True) for x in inputs]

    def fn(s0, s1, c0, c1):
        out = exact_composite(starts, ends, ray, 2, s0, s1, c0, c1)
        return out["rgb"], out["depth_acc"]
    assert torch.autograd.gradcheck(fn, inputs)
