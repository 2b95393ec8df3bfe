"""``fieldforge bench radiance`` on the bundled scene: rows per training time, resumed runs, JSON."""

import json

import pytest

from fieldforge.apps.cli import main
from fieldforge.apps.run import default_scene_path


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
