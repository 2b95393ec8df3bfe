"""Fused MLP layers (fieldforge.kernels.linear, oneDNN linear + ReLU) against the reference
(F.linear then ReLU): outputs for row counts around the block size, skips, batch shapes, empty
input; which path runs with and without gradients and under FIELDFORGE_KERNELS=torch."""

from __future__ import annotations

import pytest
import torch

from fieldforge.fields.mlp import MLP
from fieldforge.kernels import linear

pytestmark = pytest.mark.skipif(not linear.fused_available(), reason="this PyTorch build has no oneDNN fused linear")


@pytest.fixture
def paths(monkeypatch):
    """The ``fused`` flag of every block evaluated."""
    seen: list[bool] = []
    inner = linear._layers

    def spy(x, hidden, out, skips, fused):
        seen.append(fused)
        return inner(x, hidden, out, skips, fused)

    monkeypatch.setattr(linear, "_layers", spy)
    return seen


@pytest.mark.parametrize("rows", [0, 5, linear.ROWS, 2 * linear.ROWS + 17])
@pytest.mark.parametrize("skips", [(), (1,)])
def test_fused_equals_reference(monkeypatch, paths, rows, skips):
    torch.manual_seed(0)
    m = MLP(32, 64, 3, 5, skips=skips)
    x = torch.randn(rows, 32) * 2
    with torch.no_grad():
        fast = m(x)
        assert paths.count(True) == rows // linear.ROWS
        monkeypatch.setenv("FIELDFORGE_KERNELS", "torch")
        paths.clear()
        ref = m(x)
        assert paths == [False]
    assert fast.shape == ref.shape == (rows, 5)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_batch_shape_and_gradients_take_the_reference(paths):
    torch.manual_seed(1)
    m = MLP(16, 32, 2, 4)
    x = torch.randn(3, linear.ROWS, 16)
    with torch.no_grad():
        fast = m(x)
    assert fast.shape == (3, linear.ROWS, 4) and paths.count(True) == 3
    paths.clear()
    out = m(x)  # parameters need gradients: the reference, differentiable
    assert paths == [False] and out.requires_grad
    out.sum().backward()
    assert m.out.weight.grad is not None
    torch.testing.assert_close(fast, out.detach(), rtol=1e-5, atol=1e-5)


def test_float64_takes_the_reference(paths):
    m = MLP(8, 16, 1, 2).double()
    with torch.no_grad():
        m(torch.randn(2 * linear.ROWS, 8, dtype=torch.float64))
    assert paths == [False]
