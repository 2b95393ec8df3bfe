"""Unbounded scenes: the contraction, samples beyond the grid's box, a homogeneous medium rendered
against its closed form, and which scenes turn it on."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fieldforge.apps.training.methods import get_method
from fieldforge.errors import FieldforgeError
from fieldforge.fields.base import Field
from fieldforge.fields.contraction import contract
from fieldforge.fields.ngp import NGPField
from fieldforge.render.far import far_samples, merge_packed
from fieldforge.render.marcher import render_camera, render_rays
from fieldforge.render.occupancy import OccupancyGrid, ray_aabb_intersect
from fieldforge.scenes.rays import Rays
from tests.helpers import tiny_scene

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_contraction_keeps_the_box_and_squeezes_the_world_into_twice_its_size():
    g = torch.Generator().manual_seed(0)
    inside = torch.rand(500, 3, generator=g) * 2 - 1
    assert torch.equal(contract(inside), inside)
    d = torch.randn(200, 3, generator=g)
    d = d / d.abs().amax(-1, keepdim=True)  # on the box surface (L-inf norm 1)
    r = torch.tensor([1.0, 1.0 + 1e-6, 2.0, 10.0, 1e6])
    c = contract(d[:, None, :] * r[None, :, None])  # [200, 5, 3]
    norms = c.abs().amax(-1)
    assert torch.allclose(norms, (2 - 1 / r).expand(200, 5), atol=1e-5)  # 1 -> 1, inf -> 2
    assert (norms[:, 1:] >= norms[:, :-1]).all()  # monotone along each ray from the centre
    assert torch.allclose(c / norms[..., None], d[:, None, :].expand(200, 5, 3), atol=1e-5)  # direction kept


def _rays(o, d):
    d = torch.as_tensor(d, dtype=torch.float32)
    return Rays(torch.as_tensor(o, dtype=torch.float32), d / d.norm(dim=-1, keepdim=True))


def test_far_samples_tile_box_exit_to_far_evenly_in_disparity():
    rays = _rays([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0]], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # from the centre; missing
    ri, ts, te = far_samples(rays, BOX.reshape(6), 4, near=0.5, far=100.0)
    assert ri.tolist() == [0] * 4 + [1] * 4
    for r, t0 in ((0, 1.0), (1, 0.5)):  # the box exit, or near for a ray that misses the box
        s, e = ts[ri == r], te[ri == r]
        assert s[0] == pytest.approx(t0) and e[-1] == pytest.approx(100.0) and torch.equal(s[1:], e[:-1])
        disparity = 1 / torch.cat([s, e[-1:]]).double()
        assert torch.allclose(disparity.diff(), disparity.diff()[:1].expand(4), rtol=1e-4)
    grid = (torch.tensor([0, 0, 1]), torch.tensor([0.1, 0.2, 0.2]), torch.tensor([0.2, 0.3, 0.3]))
    mi, ms, me = merge_packed(grid, (ri, ts, te), 2)
    assert mi.tolist() == [0] * 6 + [1] * 5
    assert ms[mi == 0][:2].tolist() == pytest.approx([0.1, 0.2]) and ms[mi == 1][0] == pytest.approx(0.2)
    for r in (0, 1):
        assert (ms[mi == r].diff() > 0).all()  # front to back: the grid's samples, then the far ones


def test_merge_packed_equals_a_stable_sort_of_both_lists():
    g = torch.Generator().manual_seed(0)

    def packed(n_rays: int):
        counts = torch.randint(0, 4, (n_rays,), generator=g)
        ri = torch.repeat_interleave(torch.arange(n_rays), counts)
        return ri, torch.rand(len(ri), generator=g), torch.rand(len(ri), generator=g)

    a, b = packed(50), packed(50)
    order = torch.sort(torch.cat([a[0], b[0]]), stable=True).indices  # each ray: a's samples, then b's
    expected = [torch.cat([x, y])[order] for x, y in zip(a, b)]
    for got, want in zip(merge_packed(a, b, 50), expected):
        assert torch.equal(got, want)
    empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))
    assert all(torch.equal(x, y) for x, y in zip(merge_packed(empty, b, 50), b))


class Medium(Field):
    """Constant density and colour everywhere (a fog filling all of space)."""

    def __init__(self, sigma: float):
        super().__init__(BOX)
        self.sigma = sigma

    def density(self, x, t=None):
        return torch.full((*x.shape[:-1], 1), self.sigma)

    def forward(self, x, d, t=None):
        return {"density": self.density(x), "rgb": torch.full((*x.shape[:-1], 3), 0.25)}


@pytest.mark.parametrize("far_n", [0, 16])
def test_homogeneous_medium_matches_its_closed_form(far_n):
    sigma, far = 0.05, 40.0
    grid = OccupancyGrid(BOX.reshape(6), 8)
    grid.binaries.fill_(True)
    rays = _rays([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1]], [[1.0, 0.0, 0.0], [0.3, 1.0, -0.5]])
    out = render_rays(Medium(sigma), grid, rays, torch.zeros(3), 0.01, near=0.0, far=far, n_far=far_n)
    _, t_exit, _ = ray_aabb_intersect(rays.origins, rays.directions, BOX.reshape(6))
    length = torch.full((2,), far) if far_n else t_exit  # without far samples the ray ends at the box
    expected = 1 - torch.exp(-sigma * length)
    assert torch.allclose(out["opacity"].reshape(-1), expected, atol=2e-3)
    assert torch.allclose(out["rgb"], 0.25 * expected[:, None].expand(2, 3), atol=1e-3)


def test_camera_render_with_far_samples_sees_the_medium_beyond_the_box():
    scene = tiny_scene(1, 6)
    grid = OccupancyGrid(BOX.reshape(6), 8)
    grid.binaries.fill_(True)
    cams = scene.cameras[[0]]
    near_only = render_camera(Medium(0.05), grid, cams, torch.zeros(3), 0.01, 0.0, 40.0)
    with_far = render_camera(Medium(0.05), grid, cams, torch.zeros(3), 0.01, 0.0, 40.0, n_far=16)
    assert (with_far["opacity"] > near_only["opacity"] + 0.5).all()  # 40 units of fog instead of < 3.5


def test_unbounded_turns_on_for_real_captures_with_a_contracting_field():
    cls = get_method("ngp")
    small = dict(n_levels=2, log2_hashmap_size=10, max_resolution=32)
    rgba = tiny_scene()
    real = dataclasses.replace(rgba, images=[im[..., :3].clone() for im in rgba.images], format="colmap")
    on = cls(dataclasses.replace(cls.Config(), **small), real, torch.device("cpu"))
    assert on.n_far == 32 and on.alpha_thre == 1e-2 and on.field.unbounded
    plain = cls(dataclasses.replace(cls.Config(), **small), rgba, torch.device("cpu"))
    assert plain.n_far == 0 and plain.alpha_thre == 0.0
    off = cls(dataclasses.replace(cls.Config(), unbounded="off", **small), real, torch.device("cpu"))
    assert off.n_far == 0 and not off.field.unbounded
    nerf = get_method("nerf")
    assert not nerf(dataclasses.replace(nerf.Config(), width=16, depth=2), real, torch.device("cpu")).unbounded
    with pytest.raises(FieldforgeError, match="unbounded=on"):
        nerf(dataclasses.replace(nerf.Config(), unbounded="on", width=16, depth=2), real, torch.device("cpu"))
    with pytest.raises(FieldforgeError, match="auto, on or off"):
        cls(dataclasses.replace(cls.Config(), unbounded="maybe", **small), real, torch.device("cpu"))


def test_contracted_ngp_field_has_density_far_outside_its_box():
    torch.manual_seed(0)
    field = NGPField(BOX, n_levels=2, log2_hashmap_size=10, max_resolution=32, hidden=16, unbounded=True)
    bounded = NGPField(BOX, n_levels=2, log2_hashmap_size=10, max_resolution=32, hidden=16)
    far = torch.tensor([[50.0, -3.0, 7.0], [1e5, 0.0, 0.0]])
    assert (field.density(far) > 0).all() and (bounded.density(far) == 0).all()
    assert math.isfinite(float(field.density(far).detach().sum()))


def test_distortion_weight_adds_the_batch_distortion_to_the_loss():
    cls = get_method("ngp")
    small = dict(n_levels=2, log2_hashmap_size=10, max_resolution=32, grid_warmup=0)
    rgba = tiny_scene()
    real = dataclasses.replace(rgba, images=[im[..., :3].clone() for im in rgba.images], format="colmap")
    losses = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        method = cls(dataclasses.replace(cls.Config(), distortion=weight, **small), real, torch.device("cpu"))
        metrics = method.train_step(0)
        losses[weight] = (metrics["loss"], 10 ** (-metrics["psnr"] / 10))  # loss and the batch MSE
    assert losses[0.0][0] == pytest.approx(losses[0.0][1], rel=1e-6)  # off: the loss is the MSE
    assert losses[10.0][1] == pytest.approx(losses[0.0][1], rel=1e-6)  # the same batch and render
    assert losses[10.0][0] > losses[10.0][1] * 1.01  # on: distortion is added
