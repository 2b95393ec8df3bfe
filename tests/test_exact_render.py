"""Exact piecewise-linear volume rendering against dense quadrature, scipy and the packed compositor."""

from __future__ import annotations

import math

import pytest
import scipy.integrate
import torch

from fieldforge.fields.base import Field
from fieldforge.fields.piecewise import PLField
from fieldforge.render.exact import exact_composite, render_rays_exact, transmittance_integral
from fieldforge.render.marcher import render_rays
from fieldforge.render.occupancy import OccupancyGrid
from fieldforge.render.volume import composite
from fieldforge.scenes.rays import Rays


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


class _AffineField(Field):
    """density and colour affine in position: the exact compositor is exact on any samples."""

    A = torch.tensor([0.3, -0.2, 0.5])

    def density(self, x, t=None):
        return (1.5 + x @ self.A.to(x))[..., None]

    def forward(self, x, d, t=None):
        return {"density": self.density(x), "rgb": 0.5 + 0.2 * x}


def test_marcher_exact_compositor_matches_fine_quadrature():
    field = _AffineField(torch.tensor([[-1.0] * 3, [1.0] * 3]))
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8)
    grid.binaries[:] = True
    g = torch.Generator().manual_seed(3)
    o = torch.rand(16, 3, generator=g) * 0.6 - torch.tensor([0.3, 0.3, 3.0])
    d = torch.nn.functional.normalize(torch.randn(16, 3, generator=g) * 0.15 + torch.tensor([0.0, 0, 1]), dim=-1)
    rays = Rays(o, d)
    bg = torch.tensor([1.0, 1.0, 1.0])
    kw = dict(render_step_size=0.1, early_stop_eps=0.0, prune=False)
    exact = render_rays(field, grid, rays, bg, compositor="exact", **kw)
    quad = render_rays(field, grid, rays, bg, **kw)
    # reference: the same samples, each split into 4000 midpoint sub-steps, composited in float64
    ray_indices, t0, t1 = grid.sample(rays, sigma_fn=None, render_step_size=0.1, early_stop_eps=0.0)
    n = 4000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    tt = t0.double()[:, None] + (t1 - t0).double()[:, None] * u  # [S, n]
    x = o.double()[ray_indices][:, None] + d.double()[ray_indices][:, None] * tt[..., None]
    sig = 1.5 + x @ _AffineField.A.double()
    rgb = 0.5 + 0.2 * x
    tau = sig * ((t1 - t0).double() / n)[:, None]
    ref_rgb, ref_op = torch.zeros(16, 3, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
    for r in range(16):  # reference only: a plain loop over the 16 rays
        tr = tau[ray_indices == r].reshape(-1)
        c = rgb[ray_indices == r].reshape(-1, 3)
        T = torch.exp(-(torch.cumsum(tr, 0) - tr))
        w = T * -torch.expm1(-tr)
        ref_op[r] = w.sum()
        ref_rgb[r] = (w[:, None] * c).sum(0) + (1 - w.sum())
    err_exact = (exact["rgb"].double() - ref_rgb).abs().max()
    err_quad = (quad["rgb"].double() - ref_rgb).abs().max()
    assert err_exact < 2e-5, err_exact
    assert err_quad > 10 * err_exact  # the midpoint rule is visibly worse at this step size
    assert torch.allclose(exact["opacity"][:, 0].double(), ref_op, atol=2e-5)
    with pytest.raises(ValueError, match="compositor"):
        render_rays(field, grid, rays, bg, compositor="simpson", **kw)
