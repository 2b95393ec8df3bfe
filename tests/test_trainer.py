"""Trainer: exact resume, divergence handling, atomic and pickle-free checkpoints."""

import dataclasses
import pickle

import pytest
import torch

from fieldforge.apps.training.checkpoint import load_safe, save_atomic
from fieldforge.apps.training.config import TrainConfig
from fieldforge.apps.training.methods import get_method
from fieldforge.apps.training.run import RunDir
from fieldforge.apps.training.trainer import train
from fieldforge.errors import DataError, FieldforgeError
from tests.helpers import tiny_scene


def _method(steps=12):
    cls = get_method("nerf")
    cfg = dataclasses.replace(cls.Config(), steps=steps, width=16, depth=2, init_batch_rays=64, max_batch_rays=64,
                              grid_resolution=8, grid_every=2, grid_warmup=4)
    torch.manual_seed(0)
    return cls(cfg, tiny_scene(), torch.device("cpu"))


def _params(m):
    return {k: v.clone() for k, v in m.field.state_dict().items()}


def test_resume_is_exact(tmp_path):
    cfg = TrainConfig(method="nerf", steps=12, log_every=1)
    a = _method()
    train(a, RunDir(tmp_path / "a"), cfg, 12, quiet=True)
    b = _method()
    train(b, RunDir(tmp_path / "b"), cfg, 5, quiet=True)  # "killed" after step 5's checkpoint
    c = _method()  # fresh process: rebuilt from config, then resumed
    train(c, RunDir(tmp_path / "b"), cfg, 12, resume=True, quiet=True)
    pa, pc = _params(a), _params(c)
    assert pa.keys() == pc.keys()
    for k in pa:
        assert torch.equal(pa[k], pc[k]), k
    assert torch.equal(a.estimator.binaries, c.estimator.binaries)
    assert load_safe(RunDir(tmp_path / "b").checkpoint)["step"] == 12


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    m = _method()
    cfg = TrainConfig(method="nerf", steps=10, checkpoint_seconds=0.0)
    original = m.train_step

    def step(i):
        out = original(i)
        if i == 6:
            out["loss"] = float("nan")
        return out

    m.train_step = step
    with pytest.raises(FieldforgeError, match="nan at step 6.*step 6"):
        train(m, RunDir(tmp_path), cfg, 10, quiet=True)
    assert load_safe(RunDir(tmp_path).checkpoint)["step"] == 6


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_payload_is_refused(tmp_path):
    p = tmp_path / "last.pt"
    with open(p, "wb") as f:
        pickle.dump({"method": _Evil()}, f)
    with pytest.raises(DataError, match="last.pt"):
        load_safe(p)
    torch.save({"method": _Evil()}, p)
    with pytest.raises(DataError, match="not a safe"):
        load_safe(p)


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "ckpt.pt"
    save_atomic({"step": 1}, p)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_atomic({"step": 2, "x": Boom()}, p)
    assert load_safe(p)["step"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["ckpt.pt"]
