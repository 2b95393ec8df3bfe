"""Fused EWA projection kernel vs the PyTorch reference of ``project_gaussians``: every output
and every gradient (means, quats, scales, viewmats) on scenes with Gaussians behind the camera,
beyond the far plane, outside the image, with tiny opacities, near-zero scales and
unnormalised quaternions, in two cameras; N = 0; bit-identical results on 1 and 2 threads."""

from __future__ import annotations

import math

import pytest
import torch

from fieldforge.apps.bench.splat import random_view
from fieldforge.render.raster_project import project_gaussians

pytest.importorskip("numba")

W, H = 64, 48
FAR = 7.0


def scene(n: int = 400, seed: int = 0):
    """Two cameras (identity and a rotated, shifted one) and N Gaussians with every edge case."""
    g = torch.Generator().manual_seed(seed)
    (means, quats, scales, opac, _), vm, K = random_view(n, W, H, seed=seed)
    k = n // 8
    means[:k, 2] *= -1  # behind the camera
    means[k:2 * k, 2] += FAR  # beyond the far plane
    means[2 * k:3 * k, 0] += 3.0 * means[2 * k:3 * k, 2]  # outside the image
    opac[3 * k:4 * k] = torch.rand(k, generator=g) * 2 / 255  # around the opacity cut
    scales[4 * k:5 * k] = 1e-9  # degenerate
    scales[5 * k:6 * k] *= 30  # large, partly overlapping the border
    quats = quats * (torch.rand(n, 1, generator=g) * 4 + 0.05)  # unnormalised
    a = 0.4
    rot = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    vm2 = torch.eye(4)
    vm2[:3, :3], vm2[:3, 3] = rot, torch.tensor([-1.0, 0.2, 0.5])
    return means, quats, scales, opac, torch.stack([vm[0], vm2]), K.repeat(2, 1, 1)


def run(monkeypatch, backend: str, means, quats, scales, opac, viewmats, Ks, **kw):
    """Outputs and gradients of a random linear loss of means2d, depths and conics."""
    monkeypatch.setenv("FIELDFORGE_KERNELS", backend)
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, viewmats)]
    radii, means2d, depths, conics = project_gaussians(*leaves[:3], leaves[3], Ks, W, H, opacities=opac,
                                                       far_plane=FAR, **kw)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in (means2d, depths, conics))
    loss.backward()
    return [radii, means2d, depths, conics] + [t.grad for t in leaves]


NAMES = ("radii", "means2d", "depths", "conics", "grad means", "grad quats", "grad scales", "grad viewmats")


def assert_match(fast, ref):
    for name, f, r in zip(NAMES, fast, ref):
        if name == "radii":
            assert torch.equal(f, r), name
        else:
            scale = r.abs().max().item() if r.numel() else 1.0
            torch.testing.assert_close(f, r, rtol=1e-3, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("with_opacities", [True, False])
def test_projection_matches_reference(monkeypatch, with_opacities):
    means, quats, scales, opac, vm, K = scene()
    opac = opac if with_opacities else None
    fast = run(monkeypatch, "numba", means, quats, scales, opac, vm, K)
    ref = run(monkeypatch, "torch", means, quats, scales, opac, vm, K)
    visible = (fast[0] > 0).all(-1)
    assert visible.any() and not visible.all()
    assert_match(fast, ref)


def test_projection_per_camera_opacities_and_radius_clip(monkeypatch):
    means, quats, scales, opac, vm, K = scene(200, seed=3)
    opac2 = torch.stack([opac, opac.flip(0)])
    fast = run(monkeypatch, "numba", means, quats, scales, opac2, vm, K, radius_clip=2.0, eps2d=0.1)
    ref = run(monkeypatch, "torch", means, quats, scales, opac2, vm, K, radius_clip=2.0, eps2d=0.1)
    assert_match(fast, ref)


def test_projection_empty(monkeypatch):
    _, _, _, _, vm, K = scene(8)
    empty = [torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0)]
    fast = run(monkeypatch, "numba", *empty, vm, K)
    assert fast[0].shape == (2, 0, 2) and fast[3].shape == (2, 0, 3)
    assert torch.equal(fast[-1], torch.zeros(2, 4, 4))


def test_projection_threads_bit_identical(monkeypatch):
    means, quats, scales, opac, vm, K = scene(3000, seed=5)
    previous = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(run(monkeypatch, "numba", means, quats, scales, opac, vm, K))
    finally:
        torch.set_num_threads(previous)
    for name, a, b in zip(NAMES, *out):
        assert torch.equal(a, b), name


def test_projection_fast_path_is_taken_and_means2d_keeps_its_gradient(monkeypatch):
    monkeypatch.setenv("FIELDFORGE_KERNELS", "numba")
    means, quats, scales, opac, vm, K = scene(50)
    means.requires_grad_(True)
    _, means2d, _, _ = project_gaussians(means, quats, scales, vm, K, W, H, opacities=opac)
    assert "Project" in type(means2d.grad_fn).__name__
    means2d.retain_grad()
    means2d.sum().backward()
    assert means2d.grad is not None and torch.equal(means2d.grad, torch.ones_like(means2d))


def test_projection_rejects_bad_shapes():
    means, quats, scales, opac, vm, K = scene(10)
    with pytest.raises(ValueError, match="quats"):
        project_gaussians(means, quats[:, :3], scales, vm, K, W, H)
    with pytest.raises(ValueError, match="Ks"):
        project_gaussians(means, quats, scales, vm, K[:1], W, H)
    with pytest.raises(ValueError, match="opacities"):
        project_gaussians(means, quats, scales, vm, K, W, H, opacities=opac[:5])
