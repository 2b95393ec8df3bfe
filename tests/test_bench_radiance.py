"""``fieldforge bench radiance`` on the bundled scene: rows per training time, resumed runs, JSON."""

import json

import pytest

from fieldforge.apps.cli.main import main
from fieldforge.apps.training.run import default_scene_path


def test_rows_follow_the_budgets_and_match_the_runs_own_metrics(tmp_path):
    out = tmp_path / "radiance.json"
    code = main(["bench", "radiance", "--data", str(default_scene_path()), "--methods", "ngp",
                 "--minutes", "0.02,0.04", "--test-images", "2", "--runs", str(tmp_path / "runs"),
                 "--out", str(out), "--set", "grid_resolution=32", "--set", "target_samples=4096"])
    assert code == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["minutes"] for r in rows] == [0.02, 0.04]
    assert rows[1]["steps"] >= rows[0]["steps"] > 0  # the second budget resumed the first run
    assert rows[0]["train_seconds"] >= 0.02 * 60 and rows[1]["train_seconds"] >= 0.04 * 60
    metrics = json.loads((tmp_path / "runs" / "ngp" / "eval" / "test" / "metrics.json").read_text())
    assert rows[1]["psnr"] == pytest.approx(metrics["psnr"], abs=1e-3)
    assert rows[1]["num_images"] == metrics["num_images"] == 2
    assert result["protocol"]["background"] == "white" and result["protocol"]["minutes"] == [0.02, 0.04]


def test_bad_budgets_give_one_line_errors(tmp_path, capsys):
    assert main(["bench", "radiance", "--data", str(default_scene_path()), "--minutes", "0,x"]) == 2
    assert main(["bench", "radiance", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--minutes" in err[0] and "missing" in err[1]


def test_distilled_method_uses_the_teacher_trained_before_it(tmp_path, capsys):
    out = tmp_path / "radiance.json"
    runs = tmp_path / "runs"
    code = main(["bench", "radiance", "--data", str(default_scene_path()), "--methods", "nerf,kilonerf",
                 "--minutes", "0.02", "--test-images", "1", "--runs", str(runs), "--out", str(out),
                 "--set", "grid_resolution=16", "--set", "target_samples=2048", "--set", "distill_steps=3"])
    assert code == 0
    nerf, kilo = json.loads(out.read_text())["rows"]
    assert nerf["teacher"] is None and kilo["teacher"] == str(runs / "nerf")
    cfg = json.loads((runs / "kilonerf" / "config.json").read_text())
    assert cfg["method"]["teacher"] == str((runs / "nerf").resolve())
    assert kilo["params"] > 1000 * 6212  # thousands of tiny networks
    assert kilo["checkpoint_mb"] == pytest.approx((runs / "kilonerf" / "checkpoints" / "last.pt").stat().st_size
                                                  / 2**20, abs=0.01)
    assert kilo["model_mb"] == pytest.approx(kilo["params"] * 4 / 2**20, abs=0.01)
    capsys.readouterr()
    assert main(["bench", "radiance", "--data", str(default_scene_path()), "--methods", "kilonerf,nerf"]) == 2
    assert "must be benchmarked before kilonerf" in capsys.readouterr().err
