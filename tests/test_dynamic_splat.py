"""The dynamic-splat method (GauFRe): warm-up, loss schedule, flags through densification,
static cloud independent of time, exact resume, and a fit of a moving scene."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fieldforge.apps.training.losses import d_ssim
from fieldforge.apps.training.methods.dynamic_splat import DynamicSplatConfig, DynamicSplatMethod
from fieldforge.apps.training.methods.splat import SplatMethod
from fieldforge.apps.training.strategy import DefaultStrategy
from fieldforge.errors import FieldforgeError
from fieldforge.render.rasterize import render_gaussians
from fieldforge.scenes import Scene
from tests.test_splat_method import small_config, train_psnr
from tests.test_splat_scenes import gaussian_scene, orbit_cameras, random_gaussians

CPU = torch.device("cpu")


def dyn_config(**kw) -> DynamicSplatConfig:
    base = dict(init_num_points=200, refine_start_iter=3, refine_every=4, reset_every=1000, sh_degree=1,
                sh_degree_interval=5, steps=80, cap_max=600, warmup_steps=5, l2_until=40, deform_width=32,
                deform_depth=3, pos_freqs=4, time_freqs=4, lr_deformation=5e-3)
    base.update(kw)
    return DynamicSplatConfig(**base)


def moving_scene(n_views: int = 12, size: int = 24) -> Scene:
    """Random Gaussians, a third of them sliding along +x by 0.8 t, seen by an orbit whose
    cameras carry times 0..1."""
    cams = orbit_cameras(n_views, size)
    cams.times = torch.linspace(0, 1, n_views)
    truth = random_gaussians(30, seed=1)
    moving = torch.arange(30) % 3 == 0
    images = []
    with torch.no_grad():
        for i in range(n_views):
            means = truth.means + moving[:, None] * torch.tensor([0.8, 0.0, 0.0]) * cams.times[i]
            img, _, _ = render_gaussians(truth, torch.linalg.inv(cams.c2w[i])[None], cams.K[i][None], size, size,
                                     backgrounds=torch.ones(1, 3), geometry=(means, truth.scales, truth.quats))
            images.append((img[0].clamp(0, 1) * 255).round().to(torch.uint8))
    return Scene(cameras=cams, images=images, names=[f"v{i}" for i in range(n_views)],
                 splits={"train": torch.arange(n_views)}, bounds=torch.tensor([[-1.2] * 3, [1.6, 1.2, 1.2]]))


def test_static_scene_is_refused():
    with pytest.raises(FieldforgeError, match="per-frame times"):
        DynamicSplatMethod(dyn_config(), gaussian_scene(n_views=2, size=8), CPU)


def test_automatic_sizes_are_a_tenth_of_splats():
    scene = moving_scene(4, 40)  # 1,600 pixels per image
    dyn = DynamicSplatMethod(dyn_config(init_num_points=0, cap_max=0), scene, CPU)
    static = SplatMethod(small_config(init_num_points=0, cap_max=0), scene, CPU)
    assert (dyn.init_points, dyn.cap_max) == (400, 4000) and (static.init_points, static.cap_max) == (4000, 40000)
    assert len(dyn.model) == 400


def test_clouds_flags_and_static_independent_of_time():
    method = DynamicSplatMethod(dyn_config(static_fraction=0.25), moving_scene(4, 16), CPU)
    model = method.model
    assert int((~model.dynamic).sum()) == 50 and int(model.dynamic.sum()) == 150
    with torch.no_grad():  # make the deformation large so time visibly matters
        model.deformation.heads.bias.copy_(torch.tensor([0.3, 0.1, -0.2, 0.1, 0.0, 0.0, 1.0, 0.2, 0.0, 0.0]))
    g0, g1 = model.geometry(0.0), model.geometry(1.0)
    static = ~model.dynamic
    for a, b in zip(g0, g1):
        assert torch.equal(a[static], b[static])
    assert torch.equal(g0[0][static], model.means[static]) and torch.equal(g0[1][static], model.scales[static])
    assert (g0[0][model.dynamic] - model.means[model.dynamic]).abs().max() > 0.1
    assert not torch.allclose(g0[0][model.dynamic], g1[0][model.dynamic])


def test_warmup_freezes_the_deformation_and_loss_switches_l2_to_l1():
    scene = moving_scene(6, 16)
    method = DynamicSplatMethod(dyn_config(warmup_steps=3, l2_until=4), scene, CPU)
    before = [p.detach().clone() for p in method.model.deformation.parameters()]
    for step in range(3):
        method.train_step(step)
    assert all(torch.equal(a, b) for a, b in zip(before, method.model.deformation.parameters()))
    method.train_step(3)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.model.deformation.parameters()))
    pred, target = torch.rand(8, 8, 3), torch.rand(8, 8, 3)
    ssim_term = 0.2 * d_ssim(pred, target)
    assert torch.allclose(method._loss(pred, target, 3), 0.8 * ((pred - target) ** 2).mean() + ssim_term)
    assert torch.allclose(method._loss(pred, target, 4), 0.8 * (pred - target).abs().mean() + ssim_term)


def test_densification_keeps_each_gaussians_flag():
    method = DynamicSplatMethod(dyn_config(static_fraction=0.5), moving_scene(4, 16), CPU)
    model = method.model
    with torch.no_grad():  # static on the left, dynamic on the right: children stay on their side
        model.means[:, 0] = torch.where(model.dynamic, 1.0, -1.0) + 0.1 * torch.randn(len(model))
        model.scales.fill_(math.log(0.01))
        model.scales[::2] = math.log(0.2)  # half split, half cloned (scene scale ~ 4.4)
    n = len(model)
    state = {"grad2d": torch.ones(n), "count": torch.ones(n)}
    strategy = DefaultStrategy(grow_grad2d=0.5, prune_opa=0.0)
    out = strategy._grow(model, method.optimizers, state, 4.4, torch.Generator().manual_seed(0))
    assert out["duplicated"] > 0 and out["split"] > 0 and len(model) == n + out["duplicated"] + out["split"]
    assert len(model.dynamic) == len(model)
    assert torch.equal(model.dynamic, model.means[:, 0] > 0)
    keep_mask = torch.rand(len(model)) > 0.5
    with torch.no_grad():
        model.opacities[~keep_mask] = -20.0
    strategy.prune_opa = 0.005
    strategy._prune(model, method.optimizers, 0, 4.4)
    assert len(model) == int(keep_mask.sum()) and torch.equal(model.dynamic, model.means[:, 0] > 0)
    mlp = {id(p) for p in method.model.deformation.parameters()}
    assert mlp == {id(p) for p in method.deform_optimizer.param_groups[0]["params"]}  # untouched by densification


def test_resume_is_exact_across_warmup_and_densification():
    scene = moving_scene(6, 16)
    torch.manual_seed(0)  # the MLP's initialisation draws from the global generator (seeded by train)
    full = DynamicSplatMethod(dyn_config(), scene, CPU)
    for step in range(12):
        full.train_step(step)
    torch.manual_seed(0)
    part = DynamicSplatMethod(dyn_config(), scene, CPU)
    for step in range(6):
        part.train_step(step)
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)
    buf.seek(0)
    fresh = DynamicSplatMethod(dyn_config(init_num_points=20), scene, CPU)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for step in range(6, 12):
        fresh.train_step(step)
    assert len(fresh.model) == len(full.model)
    assert torch.equal(fresh.model.dynamic, full.model.dynamic)
    for name, p in full.model.params().items():
        assert torch.equal(p, fresh.model.params()[name]), name
    for a, b in zip(full.model.deformation.parameters(), fresh.model.deformation.parameters()):
        assert torch.equal(a, b)


def test_fits_a_moving_scene_better_than_static_splats():
    scene = moving_scene()
    dyn = DynamicSplatMethod(dyn_config(), scene, CPU)
    static = SplatMethod(small_config(init_num_points=200, reset_every=1000, steps=80, cap_max=600), scene, CPU)
    start = train_psnr(dyn, scene)
    for step in range(80):
        dyn.train_step(step)
        static.train_step(step)
    p_dyn, p_static = train_psnr(dyn, scene), train_psnr(static, scene)
    assert p_dyn > start + 5.0, (start, p_dyn)
    assert p_dyn > p_static + 0.5, (p_dyn, p_static)
