"""``render_rays_passes`` (the no-grad image renderer) against the packed two-pass ``render_rays``."""

import pytest
import torch

from fieldforge.fields.base import Field
from fieldforge.render.marcher import render_rays, render_rays_passes
from fieldforge.render.occupancy import OccupancyGrid
from fieldforge.scenes.rays import Rays


class Blobs(Field):
    """Analytic field: two Gaussian density blobs, position-coloured; counts its evaluations."""

    channels = ("normals_dummy",)

    def __init__(self, peak: float):
        super().__init__(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
        self.peak, self.evaluated, self.calls = peak, 0, 0

    def density(self, x, t=None):
        c = torch.tensor([[0.3, 0.0, 0.0], [-0.4, 0.2, 0.1]])
        r2 = (x[:, None, :] - c).pow(2).sum(-1)
        return (self.peak * torch.exp(-r2 / 0.05)).sum(-1, keepdim=True)

    def forward(self, x, d, t=None):
        self.evaluated, self.calls = self.evaluated + len(x), self.calls + 1
        return {"density": self.density(x), "rgb": torch.sigmoid(3 * x + d), "normals_dummy": x.abs()}


def _setup(field: Field, n_rays: int, seed: int) -> tuple[OccupancyGrid, Rays, torch.Tensor]:
    """A 16^3 grid of ``field``'s occupancy, ``n_rays`` random rays towards it, a white background."""
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    grid.update(0, lambda x: field.density(x) * 0.01, warmup_steps=1)
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, -3.0]) + 0.6 * torch.randn(n_rays, 3, generator=g)
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + 0.2 * torch.randn(n_rays, 3, generator=g), dim=-1)
    return grid, Rays(o, d), torch.tensor([1.0, 1.0, 1.0])


@pytest.mark.parametrize("peak,eps,per_pass", [(5.0, 1e-4, 16), (200.0, 1e-2, 8), (200.0, 1e-4, 3)])
def test_passes_match_render_rays_within_the_termination_threshold(peak, eps, per_pass):
    field = Blobs(peak)
    grid, rays, bg = _setup(field, 512, 0)
    with torch.no_grad():
        ref = render_rays(field, grid, rays, bg, 0.01, 0.5, 6.0, early_stop_eps=eps)
        evaluated, calls = {}, {}
        for grow in (False, True):
            field.evaluated = field.calls = 0
            got = render_rays_passes(field, grid, rays, bg, 0.01, 0.5, 6.0, early_stop_eps=eps, per_pass=per_pass,
                                     max_points=64 * per_pass, grow=grow)
            evaluated[grow], calls[grow] = field.evaluated, field.calls
            for k in ("rgb", "opacity", "normals_dummy"):  # the same samples composited: equal up to rounding
                assert (got[k] - ref[k]).abs().max() <= 2e-5, (k, grow)
            hit = ref["opacity"][:, 0] > 0.5
            assert (got["depth"][hit] - ref["depth"][hit]).abs().max() < 1e-4
    # fixed passes evaluate every sample once, at most per_pass - 1 per ray past those render_rays kept
    assert int(ref["num_samples"]) <= evaluated[False] <= int(ref["num_samples"]) + (per_pass - 1) * len(rays)
    # growing passes: fewer, larger calls (each of at most max_points samples) once rays terminate
    assert calls[True] < calls[False] and evaluated[True] <= calls[True] * 64 * per_pass


class FoggyBlobs(Blobs):
    """Blobs in a thin fog that fills all of space (so the samples beyond the grid's box count)."""

    def density(self, x, t=None):
        return super().density(x) + 0.2


@pytest.mark.parametrize("kernels", ["numba", "torch"])
@pytest.mark.parametrize("per_pass", [3, 8])
def test_far_samples_follow_the_grid_samples_within_a_pass(monkeypatch, kernels, per_pass):
    """Unbounded rendering: a ray's far samples continue its march in the pass where its grid
    samples run out; the image equals render_rays' with the same far samples, on both paths."""
    monkeypatch.setenv("FIELDFORGE_KERNELS", kernels)
    field = FoggyBlobs(3.0)
    grid, rays, bg = _setup(field, 256, 2)
    with torch.no_grad():
        ref = render_rays(field, grid, rays, bg, 0.01, 0.5, 12.0, n_far=6)
        field.evaluated = 0
        got = render_rays_passes(field, grid, rays, bg, 0.01, 0.5, 12.0, per_pass=per_pass, n_far=6,
                                 max_points=32 * per_pass)
    for k in ("rgb", "opacity", "normals_dummy"):
        assert (got[k] - ref[k]).abs().max() <= 2e-5, k
    assert int(ref["num_samples"]) <= field.evaluated
    near_only = render_rays(field, grid, rays, bg, 0.01, 0.5, 12.0)
    assert (near_only["opacity"] - ref["opacity"]).abs().max() > 0.1  # the far samples matter here


class SplitBlobs(Blobs):
    """Blobs whose appearance is split from its geometry; counts the appearance evaluations."""

    splits_appearance = True

    def geometry(self, x, t=None):
        return self.density(x), x

    def appearance(self, features, d, t=None):
        self.evaluated += len(features)
        return {"rgb": torch.sigmoid(3 * features + d), "normals_dummy": features.abs()}


@pytest.mark.parametrize("alpha_thre", [0.0, 0.05])
def test_split_appearance_is_evaluated_only_on_composited_samples(alpha_thre):
    plain, split = Blobs(50.0), SplitBlobs(50.0)
    grid, rays, bg = _setup(plain, 256, 1)
    with torch.no_grad():
        ref = render_rays(plain, grid, rays, bg, 0.01, 0.5, 6.0, alpha_thre=alpha_thre)
        want = render_rays_passes(plain, grid, rays, bg, 0.01, 0.5, 6.0, alpha_thre=alpha_thre)
        got = render_rays_passes(split, grid, rays, bg, 0.01, 0.5, 6.0, alpha_thre=alpha_thre)
    for k in ("rgb", "opacity", "depth", "normals_dummy"):
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    assert 0 < split.evaluated <= int(ref["num_samples"])


def test_rays_without_samples_get_the_background_and_every_channel():
    field = Blobs(5.0)
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8)
    grid.binaries[:] = True
    rays = Rays(torch.tensor([[5.0, 5.0, 5.0]]).expand(4, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3))
    bg = torch.tensor([0.2, 0.4, 0.6])
    got = render_rays_passes(field, grid, rays, bg, 0.01, 0.0, 10.0)
    ref = render_rays(field, grid, rays, bg, 0.01, 0.0, 10.0)
    assert set(got) >= {"rgb", "opacity", "depth", "normals_dummy"}
    for k in ("rgb", "opacity", "normals_dummy"):
        assert torch.equal(got[k], ref[k]), k
    assert torch.equal(got["rgb"], bg.expand(4, 3))
