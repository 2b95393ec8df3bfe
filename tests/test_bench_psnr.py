"""``fieldforge bench psnr`` on the bundled scene at 50 px: two cheap methods, a few steps each."""

import importlib.util
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldforge.apps.bench import psnr as bench_psnr
from fieldforge.apps.bench.runs import train_budget
from fieldforge.apps.cli.main import main
from fieldforge.apps.training.run import default_scene_path

STEPS = 4
SETTINGS = ["--methods", "nerf,splat", "--steps", str(STEPS), "--downscale", "2", "--test-images", "2",
            "--threads", "1", "--set", "nerf:grid_resolution=16", "--set", "nerf:target_samples=1024",
            "--set", "nerf:width=32", "--set", "nerf:init_batch_rays=256", "--set", "splat:init_num_points=500"]
SPLAT_OVERRIDES = ["init_num_points=500"]


def _bench(out, *extra) -> dict:
    assert main(["bench", "psnr", *SETTINGS, "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """One worker; the splat run was interrupted after its first step (checkpoint at step 1)."""
    out = tmp_path_factory.mktemp("serial")
    splat_run = out / "runs" / "default-scene" / "splat"
    train_budget(splat_run, str(default_scene_path()), "splat", minutes=1e-9, steps=STEPS,
                 overrides=SPLAT_OVERRIDES, downscale=2)
    assert torch.load(splat_run / "checkpoints" / "last.pt")["step"] == 1
    return out, _bench(out, "--workers", "1")


def test_rows_are_the_runs_own_eval_metrics(serial):
    out, result = serial
    rows = result["rows"]
    assert [(r["scene"], r["method"]) for r in rows] == [("default-scene", "nerf"), ("default-scene", "splat")]
    for r in rows:
        assert set(bench_psnr.TABLE_KEYS) | {"scene", "method"} <= set(r)
        metrics = json.loads((out / "runs" / "default-scene" / r["method"] / "eval" / "test" / "metrics.json").read_text())
        assert len(metrics["images"]) == r["num_images"] == 2
        assert r["psnr"] == pytest.approx(np.mean([i["psnr"] for i in metrics["images"]]), abs=1e-9)
        assert r["ssim"] == pytest.approx(np.mean([i["ssim"] for i in metrics["images"]]), abs=1e-9)
        ckpt = torch.load(out / "runs" / "default-scene" / r["method"] / "checkpoints" / "last.pt")
        assert r["steps"] == ckpt["step"] == STEPS  # the interrupted splat run was resumed to the budget
        assert r["train_seconds"] == pytest.approx(ckpt["train_seconds"])
        assert r["params"] == metrics["params"] > 0
        assert 50 < r["peak_memory_mb"] < 8000  # a torch process, not bytes or GiB
    protocol = result["protocol"]
    assert protocol["budget"] == {"steps": STEPS} and protocol["test_images"] == 2
    scene = protocol["scenes"]["default-scene"]
    assert scene["background"] == "white" and scene["resolution"] == "50x50" and scene["format"] == "blender"
    assert {"cpu", "cores", "ram_gb", "torch", "torch_threads"} <= set(protocol["machine"])
    assert protocol["machine"]["torch_threads"] == 1


def test_markdown_and_plot_show_the_same_numbers(serial):
    out, result = serial
    md = (out / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| default-scene |")]
    assert len(table) == 2
    for line, r in zip(table, result["rows"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:4] == ["default-scene", r["method"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}"]
        assert cells[-1] == f"{r['params']:,}"
    assert "background white" in md and f"{STEPS} steps" in md
    img = iio.imread(out / "psnr_vs_time.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3].astype(int)
    for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours: one per method
        assert (np.abs(rgb - colour).sum(-1) < 30).sum() > 20


def test_rerun_does_not_retrain(serial, monkeypatch):
    out, result = serial
    runs = out / "runs" / "default-scene"
    files = [runs / m / f for m in ("nerf", "splat") for f in ("checkpoints/last.pt", "logs/train.jsonl")]
    before = [f.stat().st_mtime_ns for f in files]
    monkeypatch.setattr(bench_psnr, "map_processes", lambda *a: pytest.fail("a finished run was started again"))
    again = _bench(out)
    assert [f.stat().st_mtime_ns for f in files] == before
    assert again["rows"] == result["rows"]


def test_two_workers_give_the_same_rows(serial, tmp_path):
    _, result = serial
    parallel = _bench(tmp_path, "--workers", "2")
    keys = ("scene", "method", "psnr", "ssim", "steps", "params", "num_images")
    assert [{k: r[k] for k in keys} for r in parallel["rows"]] == [{k: r[k] for k in keys} for r in result["rows"]]


def test_bad_input_gives_one_line_errors_before_training(tmp_path, capsys):
    not_data = tmp_path / "photos"
    not_data.mkdir()
    (not_data / "notes.txt").write_text("no cameras here")
    out = tmp_path / "out"
    cases = [(["--methods", "nerf,nosuch"], "nosuch"),
             (["--scenes", str(tmp_path / "missing")], "missing: dataset not found"),
             (["--scenes", f"{default_scene_path()},{not_data}"], "photos: unknown dataset format"),
             (["--methods", "nerf", "--set", "splat:sh_degree=1"], "'splat' is not in --methods"),
             (["--methods", "splat", "--set", "grid_resolution=8"], "grid_resolution"),
             (["--minutes", "0"], "--minutes")]
    if importlib.util.find_spec("ray") is None:
        cases.append((["--ray"], "--ray: Ray is not installed"))
    for argv, message in cases:
        assert main(["bench", "psnr", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fieldforge bench: error:") and message in err[0], (argv, err)
    assert not out.exists()  # nothing trained, nothing written
