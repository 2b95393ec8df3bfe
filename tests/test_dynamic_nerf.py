"""Time-conditioned NeRF with ResField layers: zero residual equals the plain time MLP, time changes
the density, the method trains and renders per-time on a small dynamic scene, static scenes are refused."""

import dataclasses

import pytest
import torch

from fieldforge.apps.training.methods import get_method
from fieldforge.errors import FieldforgeError
from fieldforge.fields.dynamic_nerf import DynamicNeRFField
from fieldforge.fields.resfields import ResFieldLinear
from tests.helpers import tiny_scene

AABB = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])


def test_zero_residual_equals_the_plain_time_conditioned_mlp():
    torch.manual_seed(0)
    res = DynamicNeRFField(AABB, width=16, depth=3, capacity=5, rank=4)
    plain = DynamicNeRFField(AABB, width=16, depth=3, rank=0)
    missing = plain.load_state_dict(res.state_dict(), strict=False)
    assert missing.missing_keys == [] and sorted(missing.unexpected_keys) == [
        "trunk.1.M", "trunk.1.v", "trunk.2.M", "trunk.2.v"]
    with torch.no_grad():
        for layer in res.trunk:
            if isinstance(layer, ResFieldLinear):
                layer.M.zero_()
    x, d, t = torch.rand(64, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(64, 3), dim=-1), torch.rand(64, 1)
    a, b = res(x, d, t), plain(x, d, t)
    assert torch.allclose(a["density"], b["density"], atol=1e-6) and torch.allclose(a["rgb"], b["rgb"], atol=1e-6)
    assert torch.equal(res.density(x, t), a["density"])


def test_time_changes_the_field_and_is_required():
    torch.manual_seed(0)
    f = DynamicNeRFField(AABB, width=16, depth=3, capacity=5, rank=4)
    x = torch.rand(64, 3) * 2 - 1
    assert not torch.allclose(f.density(x, torch.zeros(64, 1)), f.density(x, torch.ones(64, 1)))
    with pytest.raises(ValueError, match="need times"):
        f.density(x)
    assert (f.density(torch.full((4, 3), 1.5), torch.zeros(4, 1)) == 0).all()


def _dynamic_scene():
    scene = tiny_scene(n=6)
    scene.cameras.times = torch.linspace(0, 1, 6)
    return scene


def test_method_trains_and_renders_each_time():
    cls = get_method("resfields-nerf")
    cfg = dataclasses.replace(cls.Config(), steps=4, width=16, depth=3, init_batch_rays=64, max_batch_rays=64,
                              grid_resolution=8, grid_every=2, grid_warmup=2)
    torch.manual_seed(0)
    m = cls(cfg, _dynamic_scene(), torch.device("cpu"))
    assert m.field.trunk[1].capacity == 6  # one knot per distinct training time
    for step in range(4):
        assert torch.isfinite(torch.tensor(m.train_step(step)["loss"]))
    cams = m.train_cameras
    bg = torch.ones(3)
    r0, r1 = m.render(cams[0], bg), m.render(cams[[0]], bg)
    assert torch.equal(r0["rgb"], r1["rgb"])
    moved = cams[[0]]
    moved.times = torch.tensor([1.0])
    assert not torch.equal(m.render(moved, bg)["rgb"], r0["rgb"])  # same camera, other time


def test_static_scene_is_refused():
    cls = get_method("resfields-nerf")
    with pytest.raises(FieldforgeError, match="per-frame times"):
        cls(cls.Config(), tiny_scene(), torch.device("cpu"))


def test_time_bins_average_per_bin():
    from fieldforge.apps.training.evaluate import time_bins

    rows = [{"time": t, "psnr": p, "ssim": 0.5} for t, p in [(0.0, 10), (0.1, 20), (0.5, 30), (1.0, 40), (0.99, 0)]]
    bins = time_bins(rows, 5)
    assert [(b["t0"], b["num_images"], b["psnr"]) for b in bins] == [(0.0, 2, 15.0), (0.4, 1, 30.0), (0.8, 2, 20.0)]


def test_dnerf_run_reports_per_time_metrics(tmp_path):
    from tests.conftest import shared_path

    from fieldforge.apps.cli.main import main
    from fieldforge.apps.training.evaluate import evaluate

    data = shared_path("dnerf-lego-400")
    run = tmp_path / "dyn"
    assert main(["train", str(data), "--method", "resfields-nerf", "--out", str(run), "--steps", "2", "--downscale",
                 "16", "--quiet", "--set", "width=16", "--set", "depth=2", "--set", "grid_resolution=16",
                 "--set", "init_batch_rays=64", "--set", "max_batch_rays=64"]) == 0
    r = evaluate(run, "test", max_images=6, device="cpu", write_images=False)
    assert sum(b["num_images"] for b in r["time_bins"]) == r["num_images"] == 6
    assert all(0 <= row["time"] <= 1 for row in r["images"])
    for b in r["time_bins"]:
        inside = [row["psnr"] for row in r["images"] if b["t0"] <= row["time"] <= b["t1"]]
        assert min(inside) <= b["psnr"] <= max(inside)
