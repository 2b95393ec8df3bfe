"""Masks leave pixels out of training: field methods never draw rays from them, splat methods give
them no loss (so no gradient)."""

from __future__ import annotations

import torch

from fieldforge.apps.training.methods import get_method
from tests.helpers import tiny_scene

CPU = torch.device("cpu")


def _masked_scene(masked_rgb: tuple[int, int, int]):
    """Every image: opaque black where the mask keeps the pixel (left half), ``masked_rgb`` elsewhere."""
    scene = tiny_scene(n=4, size=12)
    masks = []
    for im in scene.images:
        keep = torch.zeros(im.shape[:2], dtype=torch.bool)
        keep[:, :6] = True
        im[..., :3] = 0
        im[..., 3] = 255
        im[~keep, :3] = torch.tensor(masked_rgb, dtype=torch.uint8)
        masks.append(keep)
    scene.masks = masks
    return scene


def test_field_methods_draw_rays_only_from_kept_pixels():
    cls = get_method("ngp")
    scene = _masked_scene((255, 0, 0))
    _, px = cls(cls.Config(), scene, CPU)._batch(4096)
    assert float(px[:, :3].max()) == 0.0  # no red: every ray came from a kept pixel
    scene.masks = None
    _, px = cls(cls.Config(), scene, CPU)._batch(4096)
    assert 0.4 < float((px[:, 0] > 0.5).float().mean()) < 0.6  # without masks half the rays are red


def _one_splat_step(masked_rgb, masks: bool):
    cls = get_method("splat")
    scene = _masked_scene(masked_rgb)
    if not masks:
        scene.masks = None
    torch.manual_seed(0)
    method = cls(cls.Config(init_num_points=200, random_background=False), scene, CPU)
    loss = method.train_step(0)["loss"]
    return loss, [p.detach().clone() for p in method.model.parameters()]


def test_splat_gives_masked_pixels_no_loss_and_no_gradient():
    loss_red, params_red = _one_splat_step((255, 0, 0), masks=True)
    loss_green, params_green = _one_splat_step((0, 255, 0), masks=True)
    assert loss_red == loss_green
    assert all(torch.equal(a, b) for a, b in zip(params_red, params_green))
    loss_red, _ = _one_splat_step((255, 0, 0), masks=False)
    loss_green, _ = _one_splat_step((0, 255, 0), masks=False)
    assert loss_red != loss_green  # the same images without masks do train on those pixels
