"""GauFRe deformation MLP: near-zero at initialisation, static Gaussians unchanged by time,
the Hamilton product against scipy's rotation composition."""

import pytest
import torch

from fieldforge.fields.deformation import DeformationMLP, quat_multiply


def _gaussians(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) * 2.6 - 1.3, torch.randn(n, 3, generator=g) * 0.1 - 4,
            torch.randn(n, 4, generator=g))


def test_initial_deformation_is_small():
    torch.manual_seed(0)
    net = DeformationMLP()
    means, _, _ = _gaussians()
    for t in (0.0, 0.5, 1.0):
        d_mu, d_s, _ = net(means, t)
        assert d_mu.abs().max() < 5e-3 and d_s.abs().max() < 5e-3


def test_static_gaussians_ignore_time_and_dynamic_ones_follow_it():
    torch.manual_seed(0)
    net = DeformationMLP(width=32, depth=4, init_std=0.3, rotation="identity")
    means, scales, quats = _gaussians()
    dynamic = torch.arange(500) % 2 == 0
    a = net.deform(means, scales, quats, 0.1, dynamic)
    b = net.deform(means, scales, quats, 0.9, dynamic)
    unit = torch.nn.functional.normalize(quats, dim=-1)
    for x, y, canonical in zip(a, b, (means, scales, unit)):
        assert torch.equal(x[~dynamic], canonical[~dynamic]) and torch.equal(y[~dynamic], canonical[~dynamic])
        assert not torch.allclose(x[dynamic], y[dynamic])
    assert torch.allclose(a[2].norm(dim=-1), torch.ones(500), atol=1e-6)


def test_identity_mode_at_zero_output_keeps_the_rotation():
    net = DeformationMLP(width=16, depth=3, rotation="identity")
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    means, scales, quats = _gaussians(50)
    mu, s, q = net.deform(means, scales, quats, 0.3, torch.ones(50, dtype=torch.bool))
    assert torch.equal(mu, means) and torch.equal(s, scales)
    assert torch.allclose(q, torch.nn.functional.normalize(quats, dim=-1), atol=1e-6)


def test_hamilton_product_matches_rotation_composition():
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    a, b = torch.randn(20, 4, dtype=torch.float64), torch.randn(20, 4, dtype=torch.float64)
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    q = quat_multiply(a, b)
    xyzw = lambda w: w[:, [1, 2, 3, 0]].numpy()  # noqa: E731
    ref = (Rotation.from_quat(xyzw(a)) * Rotation.from_quat(xyzw(b))).as_matrix()
    got = Rotation.from_quat(xyzw(q)).as_matrix()
    assert abs(ref - got).max() < 1e-10


def test_bad_input():
    with pytest.raises(ValueError, match=r"means \[N, 3\]"):
        DeformationMLP(width=8, depth=2)(torch.zeros(4, 2), 0.0)
    with pytest.raises(ValueError, match="rotation"):
        DeformationMLP(rotation="screw")
