"""The splat method (training, exact resume) and the densification strategy's operations."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fieldforge.apps.training.methods.splat import SplatConfig, SplatMethod
from fieldforge.apps.training.strategy import DefaultStrategy
from tests.helpers import tiny_scene
from tests.test_splat_scenes import gaussian_scene, random_gaussians

CPU = torch.device("cpu")


def small_config(**kw) -> SplatConfig:
    base = dict(init_num_points=150, refine_start_iter=3, refine_every=4, reset_every=9, sh_degree=1,
                sh_degree_interval=5, steps=50, cap_max=400)
    base.update(kw)
    return SplatConfig(**base)


def train_psnr(method: SplatMethod, scene) -> float:
    vals = []
    for i in range(len(scene)):
        rgb = method.render(scene.cameras[i], torch.ones(3))["rgb"]
        vals.append(-10 * math.log10(float(((rgb - scene.rgb(i)) ** 2).mean())))
    return sum(vals) / len(vals)


def test_training_raises_psnr_and_densifies():
    scene = gaussian_scene(n_views=4, size=24)
    method = SplatMethod(small_config(reset_every=1000), scene, CPU)
    before, n0 = train_psnr(method, scene), len(method.model)
    for step in range(40):
        out = method.train_step(step)
    assert math.isfinite(out["loss"]) and out["rays"] == 24 * 24
    after = train_psnr(method, scene)
    assert after > before + 3.0, (before, after)
    assert len(method.model) != n0  # the strategy grew and/or pruned
    r = method.render(scene.cameras[0], torch.ones(3))
    assert r["rgb"].shape == (24, 24, 3) and r["depth"].shape == (24, 24, 1) and r["opacity"].shape == (24, 24, 1)


def test_resume_is_exact_across_densification():
    scene = gaussian_scene(n_views=4, size=20)
    full = SplatMethod(small_config(), scene, CPU)
    for step in range(14):
        full.train_step(step)
    part = SplatMethod(small_config(), scene, CPU)
    for step in range(7):
        part.train_step(step)
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)
    buf.seek(0)
    fresh = SplatMethod(small_config(init_num_points=10), scene, CPU)  # different size before loading
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for step in range(7, 14):
        fresh.train_step(step)
    assert len(fresh.model) == len(full.model)
    for name, p in full.model.params().items():
        assert torch.equal(fresh.model.params()[name], p), name
        sa, sb = full.optimizers[name].state[p], fresh.optimizers[name].state[fresh.model.params()[name]]
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"]), name


def _model_with_adam(n: int):
    model = random_gaussians(n, sh_degree=1)
    opts = {k: torch.optim.Adam([p], lr=1e-3, eps=1e-15) for k, p in model.params().items()}
    loss = sum((p ** 2).sum() for p in model.params().values())
    loss.backward()
    for o in opts.values():
        o.step()
    return model, opts


def _info(grads: torch.Tensor, width=100, height=50):
    m2 = torch.zeros(1, len(grads), 2, requires_grad=True)
    m2.grad = grads[None].clone()
    return {"means2d": m2, "radii": torch.ones(1, len(grads), 2, dtype=torch.int32), "width": width,
            "height": height, "n_cameras": 1}


def test_strategy_clone_split_prune_and_adam_state():
    model, opts = _model_with_adam(5)
    with torch.no_grad():
        model.scales[:] = math.log(0.005)  # small: clones
        model.scales[1] = math.log(0.5)  # large: splits
        model.opacities[4] = -10.0  # pruned
    old = {k: p.detach().clone() for k, p in model.params().items()}
    old_m = opts["means"].state[model.means]["exp_avg"].clone()
    strat = DefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=1000)
    state = strat.init_state(5)
    # rescaled gradient norm: 3e-4 * (100/2) ... choose pixel grads so 0, 1 exceed 2e-4 after scaling
    grads = torch.tensor([[1e-5, 0.0], [0.0, 1e-5], [1e-7, 0.0], [0, 0], [1e-5, 0]])
    done = strat.step_post_backward(model, opts, state, 1, _info(grads), scene_scale=1.0,
                                    generator=torch.Generator().manual_seed(0))
    # avg grad: 0: 1e-5*50 = 5e-4 (clone), 1: 1e-5*25 = 2.5e-4 (split), 4: clone then pruned
    assert done == {"duplicated": 2, "split": 1, "pruned": 2}
    # rows: originals 0, 2, 3 (1 split away, 4 pruned), clone of 0 (clone of 4 pruned), two children of 1
    assert len(model) == 6
    torch.testing.assert_close(model.means[:3].detach(), old["means"][[0, 2, 3]])
    assert torch.equal(model.means[3].detach(), old["means"][0])
    torch.testing.assert_close(model.scales[4:].detach(), torch.full((2, 3), math.log(0.5 / 1.6)))
    assert torch.equal(model.opacities[4:].detach(), old["opacities"][[1, 1]])
    assert not torch.equal(model.means[4], model.means[5])
    m = opts["means"].state[model.means]["exp_avg"]
    assert torch.equal(m[:3], old_m[[0, 2, 3]]) and (m[3:] == 0).all()
    assert opts["means"].param_groups[0]["params"][0] is model.means


def test_strategy_cap_and_opacity_reset():
    model, opts = _model_with_adam(4)
    with torch.no_grad():
        model.scales[:] = math.log(0.001)
        model.opacities[:] = 3.0
    strat = DefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=2, cap_max=6)
    grads = torch.tensor([[1e-5, 0], [4e-5, 0], [3e-5, 0], [2e-5, 0]])
    strat.step_post_backward(model, opts, strat.init_state(4), 2, _info(grads), scene_scale=1.0)
    assert len(model) == 6  # only the two highest-gradient Gaussians (1, 2) were cloned
    assert torch.equal(model.means[4:].detach(), model.means[[1, 2]].detach())
    limit = math.log(0.01 / 0.99)
    torch.testing.assert_close(model.opacities.detach(), torch.full((6,), limit))
    assert (opts["opacities"].state[model.opacities]["exp_avg"] == 0).all()


def test_seed_points_of_a_real_capture_get_a_background_sphere():
    import dataclasses as dc

    from fieldforge.apps.training.methods.splat import scene_scale

    scene = tiny_scene()
    g = torch.Generator().manual_seed(0)
    seeds = torch.rand(50, 3, generator=g) - 0.5
    rgb_images = [im[..., :3].clone() for im in scene.images]  # no alpha: a real capture
    real = dc.replace(scene, images=rgb_images, points=seeds, point_colors=torch.full((50, 3), 200, dtype=torch.uint8))
    m = SplatMethod(SplatConfig(), real, CPU)
    assert len(m.model) == 50 + 1000  # max(1000, 50 // 10) backdrop points
    assert torch.equal(m.model.means[:50].detach(), seeds)
    radius = (m.model.means[50:].detach() - seeds.median(0).values).norm(dim=-1)
    assert torch.allclose(radius, torch.full((1000,), 10 * scene_scale(scene.cameras)), rtol=1e-5)
    synthetic = dc.replace(scene, points=seeds)  # RGBA images (an object on a background): no backdrop
    assert len(SplatMethod(SplatConfig(), synthetic, CPU).model) == 50
    assert len(SplatMethod(SplatConfig(background_points=7), real, CPU).model) == 57


def test_strategy_hooks_check_optimizers_and_keep_the_screen_space_gradient():
    model, opts = _model_with_adam(3)
    strat = DefaultStrategy()
    strat.check_sanity(model, opts)
    with pytest.raises(ValueError, match="no optimizer for parameter.*opacities"):
        strat.check_sanity(model, {k: v for k, v in opts.items() if k != "opacities"})
    means2d = torch.zeros(3, 2, requires_grad=True) * 2.0  # a non-leaf, as the rasterizer's
    strat.step_pre_backward(model, opts, strat.init_state(3), 0, {"means2d": means2d})
    means2d.sum().backward()
    assert torch.equal(means2d.grad, torch.ones(3, 2))
