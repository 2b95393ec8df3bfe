"""``fieldforge bench kernels``: runs both paths of each entry point and reports them."""

from __future__ import annotations

import json

import pytest
import torch

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


def test_a_timed_training_step_starts_from_the_same_snapshot():
    """The ngp step case restores its snapshot before every timed call: two calls train on the
    same batch (the same rays and samples) and leave the same parameters."""
    from fieldforge.apps.bench.kernels import _step_case

    fn, _ = _step_case("ngp", None, 1, 3)
    runs = []
    for _ in range(2):
        fn.prepare()
        fn()
        runs.append(({**fn.info}, [p.detach().clone() for p in fn.method.field.parameters()]))
    assert runs[0][0] == runs[1][0] and runs[0][0]["samples"] > 0
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    fn()  # without prepare() the step continues from the trained state: a different update
    assert not all(torch.equal(a, p) for a, p in zip(runs[1][1], fn.method.field.parameters()))
