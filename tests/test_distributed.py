"""Data-parallel training (``train --nproc``): two CPU ranks against one process on the bundled
scene (downscaled 10x), exact resume with two ranks, rank-0-only output, one-line child errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fieldforge.apps.cli import main as cli
from fieldforge.apps.training import distributed
from fieldforge.apps.training.checkpoint import load_safe
from fieldforge.apps.training.config import TrainConfig
from fieldforge.apps.training.methods import get_method
from fieldforge.apps.training.run import RunDir, load_scene
from fieldforge.apps.training.trainer import train
from fieldforge.errors import FieldforgeError

STEPS = 24
SMALL_NERF = dict(width=32, depth=2, init_batch_rays=1024, max_batch_rays=1024, target_samples=2**30,
                  steps_per_diagonal=48, grid_resolution=16, grid_every=4, grid_warmup=8,
                  train_background="white", lr=1e-2)


def _method():
    cls = get_method("nerf")
    cfg = dataclasses.replace(cls.Config(), steps=STEPS, **SMALL_NERF)
    torch.manual_seed(0)
    return cls(cfg, load_scene(TrainConfig(downscale=10)).split("train"), torch.device("cpu"))


def _config() -> TrainConfig:
    return TrainConfig(method="nerf", steps=STEPS, log_every=1, checkpoint_seconds=1e9)


def _state(m) -> dict:
    return {"field": {k: v.clone() for k, v in m.field.state_dict().items()},
            "occs": m.estimator.occs.clone(), "binaries": m.estimator.binaries.clone()}


def _ddp_worker(out: str) -> int:
    """On each rank: run "a" uninterrupted, run "b" stopped at half and resumed in a rebuilt method."""
    for name, steps, resume in (("a", STEPS, False), ("b", STEPS // 2, False), ("b", STEPS, True)):
        m = _method()
        distributed.replicate(m)
        train(m, RunDir(Path(out) / name), _config(), steps, resume=resume, quiet=True)
        torch.save(_state(m), Path(out) / f"{name}-{distributed.rank()}.pt")
    return 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp")
    distributed.launch(2, _ddp_worker, str(out))
    single = _method()
    init = _state(single)
    train(single, RunDir(out / "single"), _config(), STEPS, quiet=True)
    return {"out": out, "init": init, "single": _state(single),
            **{f"{n}{r}": torch.load(out / f"{n}-{r}.pt") for n in "ab" for r in (0, 1)}}


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in state["field"].values()])


def _losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in RunDir(run).log.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, STEPS + 1))  # one writer: rank 0
    return [r["loss"] for r in lines]


def test_ranks_keep_identical_parameters_and_grids(runs):
    a0, a1 = runs["a0"], runs["a1"]
    for k in a0["field"]:
        assert torch.equal(a0["field"][k], a1["field"][k]), k
    assert torch.equal(a0["occs"], a1["occs"]) and torch.equal(a0["binaries"], a1["binaries"])
    assert (_flat(a0) - _flat(runs["init"])).abs().max() > 1e-2  # trained, not the initial model
    assert not torch.equal(a0["occs"], runs["init"]["occs"])


def test_two_ranks_match_one_process(runs):
    """Other rays, same total batch: the curves agree up to minibatch noise. Tolerances from
    single-process runs with other ray seeds: their 4-step means differ by <= 22% from seed 0's
    and their parameters by 0.45-0.63 of the distance moved (an untrained model: 67%, 1.0)."""
    two, one = _losses(runs["out"] / "a"), _losses(runs["out"] / "single")
    assert one[-1] < 0.7 * one[0]  # a curve worth comparing
    mean4 = [torch.tensor(c).reshape(-1, 4).mean(1) for c in (two, one)]
    rel = (mean4[0] - mean4[1]).abs() / mean4[1]
    assert rel.max() < 0.35, rel
    init, p1, p2 = _flat(runs["init"]), _flat(runs["single"]), _flat(runs["a0"])
    assert (p2 - p1).norm() < 0.8 * (p1 - init).norm()


def test_resume_with_two_ranks_is_exact(runs):
    for r in (0, 1):
        a, b = runs[f"a{r}"], runs[f"b{r}"]
        for k in a["field"]:
            assert torch.equal(a["field"][k], b["field"][k]), (r, k)
        assert torch.equal(a["binaries"], b["binaries"])
    ckpt = load_safe(RunDir(runs["out"] / "b").checkpoint)
    gens = [s["generator"] for s in ckpt["ranks"]]
    assert len(gens) == 2 and not torch.equal(gens[0], gens[1])  # each rank its own ray stream
    assert torch.equal(ckpt["method"]["generator"], gens[0])


def test_share_splits_the_batch_exactly(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    for n in (7, 1024, 1025):
        shares = []
        for r in range(3):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            shares.append(distributed.share(n))
        counts = [s for s, _ in shares]
        assert sum(counts) == n and max(counts) - min(counts) <= 1
        assert sum(f for _, f in shares) == pytest.approx(1.0)
        assert all(f == pytest.approx(s / n) for s, f in shares)


def test_nproc_conflicting_with_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(FieldforgeError, match="--nproc 2 conflicts with torchrun's WORLD_SIZE=3"):
        distributed.run_ranks(2, lambda: 0)


def test_cli_nproc_writes_once_from_rank_zero(tmp_path, capfd):
    sets = [f"--set={k}={v}" for k, v in SMALL_NERF.items()]
    assert cli.main(["train", "--method", "nerf", "--downscale", "10", "--steps", "3", "--nproc", "2",
                     "--out", str(tmp_path / "run"), "--quiet", "--checkpoint-seconds", "0", *sets]) == 0
    printed = [line for line in capfd.readouterr().out.splitlines() if line.strip()]
    assert len(printed) == 1 and json.loads(printed[0])["step"] == 3  # one summary, from rank 0
    run = RunDir(tmp_path / "run")
    assert [json.loads(line)["step"] for line in run.log.read_text().splitlines()] == [3]
    assert len(load_safe(run.checkpoint)["ranks"]) == 2


def test_cli_child_error_is_one_line(tmp_path, capfd):
    assert cli.main(["train", "--method", "splat", "--nproc", "2", "--downscale", "10",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("fieldforge train: error: method 'splat' cannot train on several processes")
    assert "DistributedDataParallel" in err[0]
    assert not (tmp_path / "run" / "config.json").exists()
