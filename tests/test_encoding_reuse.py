"""A field that reuses its encoding (ngp) is encoded once per training step: the pruning passes keep
the kept samples' hash-grid encodings and the trained forward takes them back. Training must not
change: the same losses and parameters, step for step, as encoding twice."""

from __future__ import annotations

import pytest
import torch

from fieldforge.apps.training.methods import get_method
from fieldforge.fields.ngp import NGPField
from fieldforge.encoders.hashgrid import HashGrid
from tests.helpers import tiny_scene

CPU = torch.device("cpu")


def _train(monkeypatch, reuse: bool, steps: int = 6):
    monkeypatch.setattr(NGPField, "reuses_encoding", reuse)
    calls = {"encoded": 0}
    forward = HashGrid.forward

    def counting(self, x, known=None):
        calls["encoded"] += 0 if known is not None else x.reshape(-1, 3).shape[0]
        return forward(self, x, known)

    monkeypatch.setattr(HashGrid, "forward", counting)
    torch.manual_seed(0)
    cls = get_method("ngp")
    method = cls(cls.Config(grid_warmup=2, grid_every=2, grid_resolution=32), tiny_scene(n=4, size=16), CPU)
    logs = [method.train_step(s) for s in range(steps)]
    return logs, [p.detach().clone() for p in method.field.parameters()], calls["encoded"]


@pytest.mark.parametrize("kernels", ["numba", "torch"])
def test_reusing_the_encoding_trains_exactly_as_encoding_twice(monkeypatch, kernels):
    monkeypatch.setenv("FIELDFORGE_KERNELS", kernels)
    logs_twice, params_twice, encoded_twice = _train(monkeypatch, reuse=False)
    logs_once, params_once, encoded_once = _train(monkeypatch, reuse=True)
    assert [log["loss"] for log in logs_once] == [log["loss"] for log in logs_twice]
    assert all(torch.equal(a, b) for a, b in zip(params_once, params_twice))
    samples = sum(int(log["samples"]) for log in logs_once)
    assert samples > 0
    if kernels == "numba":  # the fast path skips the second encoding of every trained sample
        assert encoded_once == encoded_twice - samples
