"""Frequency encoding, random Fourier features and SH: exact values, layout, shapes, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _eval_sh_bases_fast

from fieldforge.encoders import FourierFeatures, FrequencyEncoding, SHEncoding


def test_frequency_exact_values():
    enc = FrequencyEncoding(2, n_freqs=3)
    x = torch.tensor([[0.25, -0.5]])
    p = np.array([0.25, -0.5])
    expect = [0.25, -0.5]
    for k in range(3):
        f = 2.0**k * math.pi
        expect += list(np.sin(f * p)) + list(np.cos(f * p))
    assert enc.out_dim == 2 + 12
    assert np.allclose(enc(x)[0].numpy(), expect, atol=1e-6)
    # the NeRF code form: no pi, 63 outputs for 3-D positions with L = 10
    nerf = FrequencyEncoding(3, 10, pi_factor=False)
    assert nerf.out_dim == 63
    y = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(nerf(y)[0, 3 + 9 * 6:3 + 9 * 6 + 3], torch.sin(512 * y[0]), atol=1e-4)


def test_frequency_without_input_and_grad():
    enc = FrequencyEncoding(3, 4, include_input=False)
    x = torch.rand(5, 7, 3, dtype=torch.float64, requires_grad=True)
    out = enc(x)
    assert out.shape == (5, 7, 24) and out.dtype == torch.float64
    assert torch.autograd.gradcheck(enc, (x[:2, :2].detach().requires_grad_(True),))


def test_fourier_features_values_and_layout():
    enc = FourierFeatures(2, n_features=16, sigma=3.0, seed=1)
    B = enc.B.double()
    assert torch.all(B.norm(dim=1)[1:] >= B.norm(dim=1)[:-1])  # sorted low -> high
    x = torch.rand(10, 2, dtype=torch.float64) * 2 - 1
    ph = 2 * math.pi * x @ B.T
    expect = torch.stack([torch.sin(ph), torch.cos(ph)], -1).reshape(10, 32)
    assert torch.allclose(enc(x.float()).double(), expect, atol=1e-4)
    # same seed, same matrix; sigma scales it
    assert torch.allclose(FourierFeatures(2, 16, sigma=6.0, seed=1).B, 2 * enc.B)
    assert FourierFeatures(3, 8, include_input=True).out_dim == 19


def test_fourier_bandwidth_statistics():
    enc = FourierFeatures(2, n_features=4000, sigma=5.0)
    assert enc.B.std().item() == pytest.approx(5.0, rel=0.05)


def test_sh_matches_gsplat_and_is_orthonormal():
    d = torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
    for degree in (1, 2, 3, 4, 5):
        enc = SHEncoding(degree)
        assert enc.out_dim == degree**2
        assert torch.allclose(enc(d), _eval_sh_bases_fast(degree**2, d), atol=1e-12)
    # orthonormality by Monte Carlo-free quadrature: Fibonacci sphere, 20k points
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = torch.sqrt(1 - z * z)
    pts = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    Y = SHEncoding(5)(pts)
    gram = Y.T @ Y * (4 * math.pi / n)
    assert torch.allclose(gram, torch.eye(25, dtype=torch.float64), atol=2e-3)


def test_sh_tcnn_degree_naming():
    assert SHEncoding(4).out_dim == 16


@pytest.mark.parametrize("make", [lambda: FrequencyEncoding(0, 3), lambda: FourierFeatures(2, sigma=0.0),
                                  lambda: FourierFeatures(2, sigma=-1.0), lambda: SHEncoding(0),
                                  lambda: SHEncoding(6), lambda: FrequencyEncoding(2, 0, include_input=False)])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_wrong_input_dimension():
    for enc in (FrequencyEncoding(3, 2), FourierFeatures(2), SHEncoding(3)):
        with pytest.raises(ValueError, match="expected input"):
            enc(torch.rand(4, 5))
