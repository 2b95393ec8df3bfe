"""Every encoder: shape, dtype, gradients against finite differences, and wrong-dimension errors."""

from __future__ import annotations

import pytest
import torch

from fieldforge.encoders import (SAPE, FourierFeatures, FrequencyEncoding, HashGrid, RBFGridEncoding,
                                 ShiftedBasisEncoding, Siren)
from fieldforge.encoders import fresh
from fieldforge.fields.nerf import NeRFField

ENCODERS = {
    "frequency": lambda: FrequencyEncoding(2, 4),
    "fourier": lambda: FourierFeatures(2, 16, sigma=3.0),
    "shifted-gaussian": lambda: ShiftedBasisEncoding(2, 16, "gaussian"),
    "shifted-triangle": lambda: ShiftedBasisEncoding(2, 16, "triangle"),
    "hashgrid": lambda: HashGrid(2, n_levels=2, n_features=2, base_resolution=4, max_resolution=8,
                                 log2_hashmap_size=8),
    "rbf": lambda: RBFGridEncoding(2, n_units=8, n_levels=2, n_features=2, base_resolution=4, max_resolution=8,
                                   log2_hashmap_size=8),
    "sape": lambda: SAPE(FourierFeatures(2, 16, sigma=3.0), res=8),
    "siren": lambda: Siren(2, 3, hidden=16, n_layers=2, omega_0=10.0),
}


def _points(enc, n=64, seed=0):
    lo, hi = enc.input_range
    g = torch.Generator().manual_seed(seed)
    # keep away from the range's edges and from the triangle basis's kinks (finite differences)
    return lo + (hi - lo) * (0.05 + 0.9 * torch.rand(n, 2, generator=g))


@pytest.mark.parametrize("name", ENCODERS)
def test_shape_dtype_and_parameter_gradients(name):
    enc = ENCODERS[name]()
    x = _points(enc).reshape(8, 8, 2)
    y = enc(x)
    assert y.shape == (8, 8, enc.out_dim) and y.dtype == torch.float32 and torch.isfinite(y).all()
    params = [p for p in enc.parameters() if p.requires_grad]
    if params:
        y.square().sum().backward()
        grads = [p.grad for p in params]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ENCODERS)
def test_input_gradient_matches_finite_differences(name):
    enc = ENCODERS[name]().double()
    x = _points(enc, 16).double().requires_grad_(True)
    w = torch.randn(16, enc.out_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (enc(x) * w).sum().backward()
    h = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for k in range(2):
            e = torch.zeros_like(x)
            e[:, k] = h
            fd[:, k] = ((enc(x + e) * w).sum(-1) - (enc(x - e) * w).sum(-1)) / (2 * h)
    assert torch.allclose(x.grad, fd, rtol=1e-4, atol=1e-5), (x.grad - fd).abs().max()


@pytest.mark.parametrize("name", ENCODERS)
def test_wrong_input_dimension_is_a_value_error(name):
    enc = ENCODERS[name]()
    with pytest.raises(ValueError, match=r"2\]"):
        enc(torch.rand(4, 3))


def test_nerf_field_sine_option_is_a_siren_trunk():
    f = NeRFField(torch.tensor([[-1.0] * 3, [1.0] * 3]), width=32, depth=3, activation="sine", omega_0=15.0)
    assert isinstance(f.trunk, Siren) and f.trunk.omega_0 == 15.0
    x = torch.rand(10, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(10, 3), dim=-1)
    out = f(x, d)
    assert out["density"].shape == (10, 1) and out["rgb"].shape == (10, 3) and (out["density"] >= 0).all()
    with pytest.raises(ValueError, match="activation"):
        NeRFField(torch.tensor([[-1.0] * 3, [1.0] * 3]), activation="tanh")


def test_fresh_tunes_siren_omega_0():
    """The target is an untrained SIREN with omega_0 = 30 (an unseen seed): FreSh must pick 30."""
    n = 64
    c = (torch.arange(n) + 0.5) / n * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    coords = torch.stack([xx, yy], -1)

    def factory(omega, seed):
        torch.manual_seed(seed)
        return Siren(2, 1, hidden=64, n_layers=2, omega_0=omega)

    with torch.no_grad():
        target = factory(30.0, 1234)(coords)
    res = fresh.select(factory, [3.0, 30.0, 300.0], coords, target, n_seeds=3, spectrum_size=16)
    assert res.chosen == 30.0 and min(res.distances) == res.distances[1]
