"""Shifted-basis embeddings and diagnostics, SIREN, and the Gaussian RBF grid."""

from __future__ import annotations

import math

import pytest
import torch

from fieldforge.encoders import (GaussianRBFLayer, RBFGridEncoding, ShiftedBasisEncoding, Siren,
                                 distance_preservation, rbf_field, stable_rank)


def test_shifted_values_and_normalisation():
    enc = ShiftedBasisEncoding(2, n_centres=4, basis="triangle", normalize="none")
    x = torch.tensor([[0.375, 0.0]])
    # centres 0, .25, .5, .75, width .25: x=.375 -> hats 0, .5, .5, 0; x=0 -> 1, 0, 0, 0
    assert torch.allclose(enc(x), torch.tensor([[0, .5, .5, 0, 1, 0, 0, 0]]))
    g = ShiftedBasisEncoding(1, n_centres=10, basis="gaussian", width=0.05, normalize="none").double()
    xs = torch.rand(7, 1, dtype=torch.float64)
    ref = torch.exp(-0.5 * ((xs - torch.arange(10) / 10) / 0.05) ** 2)
    assert torch.allclose(g(xs), ref)
    fixed = ShiftedBasisEncoding(2, 50, "gaussian", 0.02)
    dense = torch.rand(20000, 2)
    assert fixed(dense).norm(dim=-1).max() <= 1 + 1e-5
    assert fixed(dense).norm(dim=-1).max() > 0.97
    b = ShiftedBasisEncoding(2, 50, "gaussian", 0.02, normalize="batch_max_row")(dense[:100])
    assert b.norm(dim=-1).max() == pytest.approx(1.0)


def test_stable_rank_and_distance_preservation():
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    assert stable_rank(q) == pytest.approx(30.0)
    assert stable_rank(torch.outer(torch.rand(20), torch.rand(8))) == pytest.approx(1.0)
    # the Gaussian trade-off SR ~ sqrt(ln 10 / pi) / DP (spec 3.3) across widths
    n = 300
    x = torch.arange(n, dtype=torch.float64)[:, None] / n
    for sigma in (0.01, 0.03):
        enc = ShiftedBasisEncoding(1, n, "gaussian", sigma).double()
        sr, dp = stable_rank(enc(x)), distance_preservation(enc, n)
        assert sr * dp == pytest.approx(math.sqrt(math.log(10) / math.pi), rel=0.1)
        # DP is the half-width where exp(-d^2 / (4 sigma^2)) = 0.1
        assert dp == pytest.approx(2 * sigma * math.sqrt(math.log(10)), rel=0.1)


def test_siren_init_and_values():
    torch.manual_seed(0)
    m = Siren(2, 3, hidden=64, n_layers=2, omega_0=30.0)
    x = torch.rand(11, 2) * 2 - 1
    h = torch.sin(30 * (x @ m.hidden[0].weight.T + m.hidden[0].bias))
    h = torch.sin(30 * (h @ m.hidden[1].weight.T + m.hidden[1].bias))
    assert torch.allclose(m(x), h @ m.out.weight.T + m.out.bias, atol=1e-5)
    assert m.hidden[0].weight.abs().max() <= 0.5
    assert m.hidden[1].weight.abs().max() <= math.sqrt(6 / 64) / 30
    xg = x.double().requires_grad_(True)
    assert torch.autograd.gradcheck(m.double(), (xg[:3],))
    with pytest.raises(ValueError):
        Siren(2, 1, omega_0=0)


def test_rbf_layer_matches_naive_float64_and_gradcheck():
    layer = GaussianRBFLayer(6, 5).double()
    with torch.no_grad():
        layer.mu.normal_()
        layer.rho.normal_()
    f = torch.randn(40, 6, dtype=torch.float64)
    beta = torch.nn.functional.softplus(layer.rho)
    naive = torch.exp(-(beta * (f[:, None] - layer.mu) ** 2).sum(-1))
    assert torch.allclose(layer(f), naive, atol=1e-10)
    assert torch.autograd.gradcheck(layer, (f[:4].requires_grad_(True),))
    with pytest.raises(ValueError):
        GaussianRBFLayer(6, 0)


def test_rbf_encoding_units_start_active():
    enc = RBFGridEncoding(2, n_units=16)
    phi = enc(torch.rand(2000, 2))[:, enc.grid.out_dim:]
    assert phi.shape == (2000, 16)
    assert (phi.mean(0) > 0.05).all()  # no dead units at initialisation


def test_rbf_field_fits_smooth_function():
    torch.manual_seed(0)
    model = rbf_field(2, 1, n_units=16, n_levels=3, n_features=2, base_resolution=4, max_resolution=16)
    x = torch.rand(2048, 2)
    y = (torch.sin(2 * math.pi * x[:, :1]) * torch.cos(math.pi * x[:, 1:]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = (model(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt = torch.rand(2000, 2)
    yt = torch.sin(2 * math.pi * xt[:, :1]) * torch.cos(math.pi * xt[:, 1:])
    rmse = (model(xt) - yt).square().mean().sqrt().item()
    assert rmse < 0.05 * float(yt.std()), rmse  # held-out points


@pytest.mark.parametrize("make", [lambda: ShiftedBasisEncoding(2, 0), lambda: ShiftedBasisEncoding(2, 8, width=0),
                                  lambda: ShiftedBasisEncoding(2, 8, basis="sinc"),
                                  lambda: RBFGridEncoding(2, n_levels=0)])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()
