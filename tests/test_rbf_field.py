"""RBFField (GNF-SH radiance field, arXiv:2503.06762).

The expanded-form q of GaussianRBFLayer against the naive [B, N, D] float64 form is already
covered by tests/test_encoders_models.py::test_rbf_layer_matches_naive_float64_and_gradcheck.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fieldforge.fields.rbf import RBFField

AABB = torch.tensor([[-1.0, -2.0, 0.0], [2.0, 1.0, 1.5]])  # not a cube, not centred: tests normalisation


def _points(n: int, g: torch.Generator, margin: float = 0.0) -> torch.Tensor:
    lo, hi = AABB[0] - margin, AABB[1] + margin
    return lo + (hi - lo) * torch.rand(n, 3, generator=g)


def _dirs(n: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, 3, generator=g), dim=-1)


def _sh_reference(d: torch.Tensor, n_coeffs: int) -> torch.Tensor:
    """Real SH, bands 0..2 written out (tiny-cuda-nn / gsplat signs), float64, first n_coeffs."""
    x, y, z = d.unbind(-1)
    c0, c1 = 1 / (2 * math.sqrt(math.pi)), math.sqrt(3 / (4 * math.pi))
    c2a, c2b, c2c = math.sqrt(15 / (4 * math.pi)), math.sqrt(5 / (16 * math.pi)), math.sqrt(15 / (16 * math.pi))
    ys = [torch.full_like(x, c0), -c1 * y, c1 * z, -c1 * x,
          c2a * x * y, -c2a * y * z, c2b * (3 * z * z - 1), -c2a * x * z, c2c * (x * x - y * y)]
    assert n_coeffs <= len(ys)
    return torch.stack(ys[:n_coeffs], -1)


def _perturb(field: RBFField, g: torch.Generator) -> None:
    """Make every term of the decoder matter (init has w ~ 1e-2 and isotropic beta)."""
    with torch.no_grad():
        field.w.copy_(0.5 * torch.randn(field.w.shape, generator=g))
        field.rbf.rho.add_(0.5 * torch.randn(field.rbf.rho.shape, generator=g))
        field.rbf.mu.add_(0.02 * torch.randn(field.rbf.mu.shape, generator=g))
        field.linear.weight.mul_(3.0)


@pytest.mark.parametrize("sh_degree", [2, 1, 0])
def test_decoder_matches_float64_reference(sh_degree):
    g = torch.Generator().manual_seed(1)
    field = RBFField(AABB, n_units=12, n_levels=4, n_features=3, log2_hashmap_size=12, base_resolution=4,
                     max_resolution=32, sh_degree=sh_degree, seed=3)
    _perturb(field, g)
    x, d = _points(500, g, margin=0.3), _dirs(500, g)
    out = field(x, d)

    # independent recomputation: normalise, clamp, grid features, then the naive formula in float64
    x64 = x.double()
    lo, hi = AABB[0].double(), AABB[1].double()
    xn = (x64 - lo) / (hi - lo)
    inside = ((xn >= 0) & (xn <= 1)).all(-1, keepdim=True)
    assert 0.2 < inside.double().mean() < 0.9  # both cases exercised
    with torch.no_grad():
        feats = field.grid(xn.clamp(0, 1).float()).double()
    mu, beta = field.rbf.mu.double(), F.softplus(field.rbf.rho.double())
    phi = torch.exp(-(beta * (feats[:, None, :] - mu) ** 2).sum(-1))  # [B, N] via [B, N, D]
    y = feats @ field.linear.weight.double().T + field.linear.bias.double() + phi @ field.w.double()
    k = (sh_degree + 1) ** 2
    assert y.shape[-1] == 1 + 3 * k
    density = torch.exp(y[:, :1] - 1) * inside
    coeffs = y[:, 1:].reshape(-1, 3, k)  # channel-major
    rgb = torch.sigmoid((coeffs * _sh_reference(d.double(), k)[:, None, :]).sum(-1))

    assert out["density"].shape == (500, 1) and out["rgb"].shape == (500, 3)
    assert torch.allclose(out["density"].double(), density, rtol=1e-4, atol=1e-6)
    assert torch.allclose(out["rgb"].double(), rgb, rtol=0, atol=1e-5)
    # the perturbed RBF term is not negligible, so the comparison checks it
    assert (phi @ field.w.double()).abs().mean() > 1e-2


def test_density_equals_forward_and_zero_outside():
    g = torch.Generator().manual_seed(2)
    field = RBFField(AABB)
    x, d = _points(400, g), _dirs(400, g)
    out = field(x, d)
    assert torch.equal(field.density(x), out["density"])
    assert (out["density"] > 0).all() and torch.isfinite(out["density"]).all()
    assert ((out["rgb"] > 0) & (out["rgb"] < 1)).all()
    # outside on one axis at a time, on both sides, and far away
    outside = x.repeat(7, 1)
    for a in range(3):
        outside[400 * a:400 * (a + 1), a] = AABB[0, a] - 0.01 - torch.rand(400, generator=g)
        outside[400 * (a + 3):400 * (a + 4), a] = AABB[1, a] + 0.01 + torch.rand(400, generator=g)
    outside[2400:] = 1e3
    dens = field.density(outside)
    assert torch.equal(dens, torch.zeros_like(dens))
    assert torch.equal(field(outside, d.repeat(7, 1))["density"], dens)
    # arbitrary leading dimensions
    out2 = field(x.reshape(4, 100, 3), d.reshape(4, 100, 3))
    assert out2["density"].shape == (4, 100, 1) and out2["rgb"].shape == (4, 100, 3)
    assert torch.allclose(out2["rgb"].reshape(400, 3), out["rgb"], atol=1e-6)


def test_view_dependence_only_through_sh():
    g = torch.Generator().manual_seed(4)
    field = RBFField(AABB, sh_degree=2)
    x, d1, d2 = _points(300, g), _dirs(300, g), _dirs(300, g)
    with torch.no_grad():
        assert (field(x, d1)["rgb"] - field(x, d2)["rgb"]).abs().max() > 1e-3  # view-dependent at init
        k = field.n_coeffs
        rows = [1 + c * k + j for c in range(3) for j in range(1, k)]  # every coefficient but Y_0
        field.linear.weight[rows] = 0
        field.linear.bias[rows] = 0
        field.w[:, rows] = 0
        o1, o2 = field(x, d1), field(x, d2)
        assert torch.allclose(o1["rgb"], o2["rgb"], rtol=0, atol=1e-6)
        assert torch.equal(o1["density"], o2["density"])
        c0 = field.sh_coeffs(x)[..., 0]  # [B, 3]
        assert torch.allclose(o1["rgb"], torch.sigmoid(c0 / (2 * math.sqrt(math.pi))), atol=1e-6)


def test_gradients_reach_all_parameters():
    g = torch.Generator().manual_seed(5)
    field = RBFField(AABB)
    x, d = _points(2048, g), _dirs(2048, g)
    out = field(x, d)
    loss = (out["density"] * torch.randn(2048, 1, generator=g)).sum() + \
        (out["rgb"] * torch.randn(2048, 3, generator=g)).sum()
    loss.backward()
    names = dict(field.named_parameters())
    assert set(names) == {"grid.params", "rbf.mu", "rbf.rho", "linear.weight", "linear.bias", "w"}
    for name, p in names.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    for name in ("rbf.mu", "rbf.rho", "w"):  # every unit receives a gradient (none is dead)
        assert (names[name].grad.abs().sum(-1) > 0).all(), name
    # every level of the table is reached
    for info in field.grid.level_info():
        rows = names["grid.params"].grad[info["offset"]:info["offset"] + info["size"]]
        assert rows.abs().max() > 0, info


def test_units_start_active_and_seed_reproducible():
    field = RBFField(AABB, seed=7)
    x = _points(4000, torch.Generator().manual_seed(6))
    with torch.no_grad():
        phi = field.rbf(field.features(x)[0])
    assert phi.shape == (4000, 32)
    assert (phi.mean(0) > 0.05).all()  # spec pitfall: no dead units at initialisation
    state = torch.random.get_rng_state()
    again = RBFField(AABB, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # construction leaves the global RNG alone
    for (n, p), (_, q) in zip(field.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(RBFField(AABB, seed=8).rbf.mu, field.rbf.mu)


def test_short_fit_density_and_colour():
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    field = RBFField(aabb, n_units=16, n_levels=4, n_features=4, log2_hashmap_size=14, base_resolution=8,
                     max_resolution=48)
    g = torch.Generator().manual_seed(1)

    def batch(n):
        return torch.rand(n, 3, generator=g) * 2 - 1, F.normalize(torch.randn(n, 3, generator=g), dim=-1)

    def loss_fn(x, d):  # smooth sphere density (0..10) and a smooth, mildly view-dependent colour
        sigma = 10 * torch.sigmoid((0.6 - x.norm(dim=-1, keepdim=True)) / 0.05)
        rgb = 0.5 + 0.3 * torch.sin(math.pi * x) * torch.cos(0.5 * math.pi * x.roll(1, -1)) + 0.1 * d[:, 2:]
        out = field(x, d)
        return ((out["density"] - sigma) / 10).square().mean() + (out["rgb"] - rgb).square().mean()

    xt, dt = batch(2048)  # held-out points
    with torch.no_grad():
        before = float(loss_fn(xt, dt))
    opt = torch.optim.Adam(field.parameters(), lr=1e-2, eps=1e-15)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~1.5 s; small batches gain nothing from 2 threads, which stall when cores are shared
    try:
        for _ in range(150):
            loss = loss_fn(*batch(2048))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        after = float(loss_fn(xt, dt))
    assert math.isfinite(after) and after < before / 5, (before, after)  # measured ~17x


def test_bad_input():
    field = RBFField(AABB, n_levels=2, log2_hashmap_size=10, base_resolution=4, max_resolution=8)
    good = torch.rand(5, 3)
    for bad in (torch.rand(5, 2), torch.rand(5, 4), torch.rand(5, 3, 1)):
        with pytest.raises(ValueError):
            field.density(bad)
        with pytest.raises(ValueError):
            field(bad, good)
    with pytest.raises(ValueError):
        field(good, torch.rand(5, 2))
    with pytest.raises(ValueError):
        field.density(torch.zeros(5, 3, dtype=torch.long))


@pytest.mark.parametrize("kwargs", [dict(n_units=0), dict(n_units=65), dict(sh_degree=-1), dict(sh_degree=5),
                                    dict(n_levels=0), dict(aabb=torch.tensor([[0.0] * 3, [1.0, 0.0, 1.0]]))])
def test_bad_arguments(kwargs):
    kwargs = {"aabb": AABB, **kwargs}
    with pytest.raises(ValueError):
        RBFField(**kwargs)
