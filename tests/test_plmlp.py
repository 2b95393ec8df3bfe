"""Exact integration of piecewise-linear MLPs against quadrature, brute force and finite differences."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fieldforge.encoders.hat import HatEncoding
from fieldforge.fields.piecewise import (PLMLP, NotPiecewiseLinearError, PLField, RegionLimitError, integrate,
                                         integrate_polygon, integrate_rays, ray_breakpoints, regions)


def random_net(d_in: int, d_out: int, width: int, depth: int, seed: int, leaky: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    d = d_in
    for i in range(depth):
        act = nn.LeakyReLU(0.2) if leaky and i % 2 else (nn.Hardtanh(-0.5, 0.7) if leaky else nn.ReLU())
        mods += [nn.Linear(d, width), act]
        d = width
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods).double()


def hidden_pre_activations(net: nn.Sequential, x: torch.Tensor) -> list[tuple[torch.Tensor, tuple]]:
    """Inputs of every activation module with its breakpoints, by running the modules one by one."""
    out = []
    for m in net:
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            out.append((x, (0.0,)))
        elif isinstance(m, nn.Hardtanh):
            out.append((x, (m.min_val, m.max_val)))
        x = m(x)
    return out


def midpoint_grid(lo, hi, n: int) -> tuple[torch.Tensor, float]:
    axes = [lo[i] + (hi[i] - lo[i]) * (torch.arange(n, dtype=torch.float64) + 0.5) / n for i in range(len(lo))]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))
    vol = float(torch.prod(torch.tensor(hi, dtype=torch.float64) - torch.tensor(lo, dtype=torch.float64)))
    return pts, vol


# ----------------------------------------------------------------------------------------- 1-D


def test_1d_rays_match_dense_quadrature_and_sign_scan():
    net = random_net(3, 2, 16, 3, seed=1, leaky=True)
    g = torch.Generator().manual_seed(2)
    R = 4
    o = torch.randn(R, 3, generator=g, dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.randn(R, 3, generator=g, dtype=torch.float64), dim=-1)
    t0 = torch.rand(R, generator=g, dtype=torch.float64)
    t1 = t0 + 1 + 3 * torch.rand(R, generator=g, dtype=torch.float64)
    exact = integrate_rays(net, o, d, t0, t1)
    t, n_pieces = ray_breakpoints(net, o, d, t0, t1)
    N = 1 << 16
    u = (torch.arange(N, dtype=torch.float64) + 0.5) / N
    with torch.no_grad():
        for r in range(R):
            ts = t0[r] + u * (t1[r] - t0[r])
            x = o[r] + ts[:, None] * d[r]
            ref = net(x).mean(0) * (t1[r] - t0[r])
            assert torch.allclose(exact[r], ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))
            crossings = sum(int(((z[1:] - b > 0) != (z[:-1] - b > 0)).sum())
                            for z, bps in hidden_pre_activations(net, x) for b in bps)
            assert int(n_pieces[r]) == crossings + 1
            assert crossings > 3  # the test exercises real breakpoints


def test_1d_box_and_hat_encoding_match_quadrature():
    torch.manual_seed(3)
    net = nn.Sequential(HatEncoding(1, 7, -1.0, 2.0), nn.Linear(7, 12), nn.ReLU(), nn.Linear(12, 1)).double()
    exact = integrate(net, [-1.5], [2.5])
    x = -1.5 + 4.0 * (torch.arange(1 << 20, dtype=torch.float64) + 0.5) / (1 << 20)
    with torch.no_grad():
        ref = net(x[:, None]).mean(0) * 4.0
    assert torch.allclose(exact, ref, rtol=1e-9)
    reg = regions(net, [-1.5], [2.5])
    assert abs(float(reg.volume.sum()) - 4.0) < 1e-12
    pts = reg.intervals[:, :1] + torch.rand(len(reg), 1, dtype=torch.float64) * reg.volume[:, None]
    with torch.no_grad():
        assert torch.allclose(net(pts), (reg.A @ pts[..., None])[..., 0] + reg.c, atol=1e-12)


def test_hat_encoding_and_pl_field_piecewise_forms_match_forward():
    enc = HatEncoding(3, 5, 0.0, 1.0)
    x = torch.rand(1000, 3) * 1.4 - 0.2
    assert torch.allclose(enc.as_piecewise_linear()(x), enc(x), atol=1e-6)
    field = PLField(torch.tensor([[-1.0, -2, 0], [1, 0, 3]]), width=16, hat_bins=4)
    with torch.no_grad():
        field.mlp.net[-1].bias.copy_(torch.tensor([0.3, 0.5, 0.5, 0.5]))
    x = torch.rand(1000, 3) * torch.tensor([2.0, 2, 3]) + torch.tensor([-1.0, -2, 0])
    out = field(x, torch.zeros_like(x))
    pl = field.as_piecewise_linear()(x)
    assert torch.allclose(pl[:, :1], out["density"], atol=1e-5)
    assert torch.allclose(pl[:, 1:], out["rgb"], atol=1e-5)


# ----------------------------------------------------------------------------------------- 2-D


def test_2d_regions_tile_are_affine_and_integrate_exactly():
    net = random_net(2, 2, 16, 2, seed=4, leaky=True)
    lo, hi = [-0.7, 0.2], [1.3, 1.1]
    reg = regions(net, lo, hi)
    area = 2.0 * 0.9
    assert len(reg) > 20
    assert abs(float(reg.volume.sum()) - area) < 1e-12
    assert bool((reg.volume > 0).all())
    # affine inside each region, at random convex combinations of its vertices
    g = torch.Generator().manual_seed(5)
    nv = (~reg.polygons[..., 0].isnan()).sum(1)
    w = torch.rand(reg.polygons.shape[:2], generator=g, dtype=torch.float64)
    w = torch.where(torch.arange(w.shape[1]) < nv[:, None], w, 0.0)
    w = w / w.sum(1, keepdim=True)
    pts = (w[..., None] * reg.polygons.nan_to_num(0)).sum(1)
    with torch.no_grad():
        assert torch.allclose(net(pts), (reg.A @ pts[..., None])[..., 0] + reg.c, atol=1e-12)
    exact = integrate(net, lo, hi).detach()
    errors = []
    for n in (512, 1024):  # the midpoint rule converges to the exact value as O(h^2)
        pts, vol = midpoint_grid(lo, hi, n)
        with torch.no_grad():
            vals = net(pts)
        errors.append(float((exact - vals.mean(0) * vol).abs().max()))
    assert errors[1] < 1e-6 * float(vals.abs().mean())
    assert errors[1] < errors[0] / 3


def test_2d_polygon_pieces_add_up_and_condition_matches_baked_bias():
    net = random_net(2, 1, 12, 2, seed=6)
    tri1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    tri2 = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # clockwise: accepted
    whole = integrate(net, [0, 0], [1, 1])
    assert torch.allclose(integrate_polygon(net, tri1) + integrate_polygon(net, tri2), whole, rtol=1e-12)
    # extra inputs constant over the domain == the same network with the input folded into the bias
    cnet = random_net(4, 1, 12, 2, seed=7)
    cond = torch.rand(3, 2, dtype=torch.float64)
    batched = integrate(cnet, [0, 0], [1, 1], condition=cond)
    for b in range(3):
        folded = nn.Sequential(nn.Linear(2, 12), *cnet[1:]).double()
        with torch.no_grad():
            folded[0].weight.copy_(cnet[0].weight[:, :2])
            folded[0].bias.copy_(cnet[0].bias + cnet[0].weight[:, 2:] @ cond[b])
        assert torch.allclose(batched[b], integrate(folded, [0, 0], [1, 1]), rtol=1e-12)


def test_gradient_of_exact_integral_matches_finite_differences():
    net = random_net(2, 1, 8, 2, seed=8)
    integrate(net, [0, 0], [1, 1]).sum().backward()
    for p in (net[0].weight, net[2].bias, net[4].weight):
        i = (0,) * p.ndim
        with torch.no_grad():
            orig = p[i].item()
            p[i] = orig + 1e-6
            up = integrate(net, [0, 0], [1, 1]).item()
            p[i] = orig - 1e-6
            down = integrate(net, [0, 0], [1, 1]).item()
            p[i] = orig
        assert abs(p.grad[i].item() - (up - down) / 2e-6) < 1e-7


# ----------------------------------------------------------------------------------------- 3-D


def test_3d_regions_tile_are_affine_and_integrate_exactly():
    net = random_net(3, 1, 10, 2, seed=9)
    lo, hi = [-0.5, 0.0, 0.2], [0.5, 1.0, 1.7]
    reg = regions(net, lo, hi)
    assert len(reg) > 10
    assert abs(float(reg.volume.sum()) - 1.5) < 1e-12 and reg.dropped_volume < 1e-13
    g = torch.Generator().manual_seed(10)
    w = torch.rand(len(reg.tets), 4, generator=g, dtype=torch.float64)
    w = w / w.sum(1, keepdim=True)
    pts = (w[..., None] * reg.tets).sum(1)
    r = reg.tet_region
    with torch.no_grad():
        assert torch.allclose(net(pts), (reg.A[r] @ pts[..., None])[..., 0] + reg.c[r], atol=1e-12)
    exact = integrate(net, lo, hi).detach()
    errors = []
    for n in (32, 64):
        pts, vol = midpoint_grid(lo, hi, n)
        with torch.no_grad():
            vals = net(pts)
        errors.append(float((exact - vals.mean(0) * vol).abs().max()))
    assert errors[1] < 1e-5 * float(vals.abs().mean())
    assert errors[1] < errors[0] / 3


# ---------------------------------------------------------------------------------- bad input


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


class FourierFeatures(nn.Module):
    def forward(self, x):
        return torch.cat([torch.sin(x), torch.cos(x)], -1)


@pytest.mark.parametrize("bad", [nn.Softplus(), Sine(), nn.SiLU()])
def test_non_piecewise_linear_activations_are_refused(bad):
    net = nn.Sequential(nn.Linear(2, 4), bad, nn.Linear(4, 1))
    with pytest.raises(NotPiecewiseLinearError, match=type(bad).__name__):
        PLMLP(net)
    with pytest.raises(NotPiecewiseLinearError):
        integrate(nn.Sequential(FourierFeatures(), nn.Linear(4, 1)), [0, 0], [1, 1])


def test_bad_boxes_and_region_limit_give_clear_errors():
    net = random_net(2, 1, 16, 2, seed=11)
    with pytest.raises(ValueError, match="empty or inverted"):
        integrate(net, [0, 0], [0, 1])
    with pytest.raises(ValueError, match="empty or inverted"):
        integrate(net, [1, 0], [0, 1])
    with pytest.raises(ValueError, match="1, 2 or 3"):
        integrate(net, [0, 0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="takes 2 inputs"):
        integrate(net, [0, 0, 0], [1, 1, 1])
    with pytest.raises(RegionLimitError, match="max_regions=5"):
        integrate(net, [0, 0], [1, 1], max_regions=5)
    with pytest.raises(RegionLimitError, match="max_regions=5"):
        integrate(random_net(3, 1, 16, 2, seed=12), [0, 0, 0], [1, 1, 1], max_regions=5)
    with pytest.raises(RegionLimitError, match="max_pieces=3"):
        integrate_rays(random_net(3, 1, 16, 2, seed=13), torch.zeros(2, 3), torch.ones(2, 3), -5.0, 5.0, max_pieces=3)


def test_triangle_shifted_basis_is_integrable_through_its_piecewise_form():
    """The protocol an encoder follows to be integrable: the triangle shifted basis (fixed norm)."""
    from fieldforge.encoders.shifted import ShiftedBasisEncoding

    enc = ShiftedBasisEncoding(2, n_centres=6, basis="triangle", width=0.3)
    x = torch.rand(500, 2)
    assert torch.allclose(enc.as_piecewise_linear()(x), enc(x), atol=1e-6)
    torch.manual_seed(5)
    net = nn.Sequential(enc, nn.Linear(enc.out_dim, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    n = 800  # midpoint grid reference
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    grid = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        ref = net(grid).mean(0)
    got = integrate(net, [0, 0], [1, 1])
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), (got, ref)
    for bad in (ShiftedBasisEncoding(2, 6, basis="gaussian"),
                ShiftedBasisEncoding(2, 6, basis="triangle", normalize="batch_max_row")):
        with pytest.raises(ValueError, match="not piecewise linear"):
            bad.as_piecewise_linear()
