"""``fieldforge bench kernels``: runs both paths of each entry point and reports them."""

from __future__ import annotations

import json

import pytest

from fieldforge.apps.cli.main import main


def test_bench_kernels_small(tmp_path, capsys):
    out = tmp_path / "k"
    args = ["bench", "kernels", "--out", str(out), "--cases", "sh,binning,composite", "--gaussians", "2000",
            "--repeats", "1"]
    assert main(args) == 0
    result = json.loads((out / "kernels.json").read_text())
    assert result["backend"] == "numba"
    assert [r["case"].split(" ")[0] for r in result["rows"]] == ["SH", "tile", "packed"]
    for row in result["rows"]:
        assert row["reference_s"] > 0 and row["fast_s"] > 0
        assert row["speedup"] == pytest.approx(row["reference_s"] / row["fast_s"])
    assert (out / "kernels.md").read_text().count("\n") == 2 + len(result["rows"])
    assert main(args) == 2  # no overwrite without --force
    assert "use --force" in capsys.readouterr().err
    assert main(args[:3] + [str(out), "--cases", "nope"]) == 2
