"""Fused MLP layers (fieldforge.kernels.linear, oneDNN linear + ReLU) against the reference
(F.linear then ReLU, autograd): outputs and every gradient for row counts around the block size,
skips, batch shapes, layers without bias, empty input; which path runs under
FIELDFORGE_KERNELS=torch and for float64."""

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

    def spy(x, hidden, out, skips, fused, inputs=None):
        seen.append(fused)
        return inner(x, hidden, out, skips, fused, inputs)

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


def gradients(monkeypatch, mode: str, m: MLP, x: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
    """Output, x gradient (or None) and parameter gradients of sum(m(x) * v) under ``mode``."""
    monkeypatch.setenv("FIELDFORGE_KERNELS", mode)
    m.zero_grad(set_to_none=True)
    xr = x.detach().clone().requires_grad_(x.requires_grad)
    out = m(xr)
    (out * v).sum().backward()
    return [out.detach(), xr.grad, *[p.grad for p in m.parameters()]]


@pytest.mark.parametrize("rows", [0, 5, linear.ROWS, 2 * linear.ROWS + 17])
@pytest.mark.parametrize("skips,x_grad", [((), True), ((), False), ((1,), True), ((0, 2), True)])
def test_gradients_equal_reference(monkeypatch, paths, rows, skips, x_grad):
    torch.manual_seed(2)
    m = MLP(24, 48, 3, 4, skips=skips)
    x = (torch.randn(rows, 24) * 2).requires_grad_(x_grad)
    v = torch.randn(rows, 4)
    fast = gradients(monkeypatch, "auto", m, x, v)
    assert paths.count(True) == rows // linear.ROWS
    paths.clear()
    ref = gradients(monkeypatch, "torch", m, x, v)
    assert paths == [False]
    assert (fast[1] is None) == (ref[1] is None) == (not x_grad)
    for a, b in zip(fast, ref):
        if b is not None:
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * (1 + float(b.abs().max()) if b.numel() else 1))


def test_batch_shape_and_gradients(monkeypatch, paths):
    torch.manual_seed(1)
    m = MLP(16, 32, 2, 4)
    x = torch.randn(3, linear.ROWS, 16)
    with torch.no_grad():
        fast = m(x)
    assert fast.shape == (3, linear.ROWS, 4) and paths.count(True) == 3
    v = torch.randn(3, linear.ROWS, 4)
    trained = gradients(monkeypatch, "auto", m, x.requires_grad_(True), v)
    ref = gradients(monkeypatch, "torch", m, x, v)
    assert trained[0].shape == (3, linear.ROWS, 4) and trained[1].shape == x.shape
    torch.testing.assert_close(fast, ref[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(trained, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_layers_without_bias():
    torch.manual_seed(3)
    w0, w1 = (torch.randn(8, 6) * 0.5).requires_grad_(True), (torch.randn(2, 8) * 0.5).requires_grad_(True)
    b0 = torch.randn(8).requires_grad_(True)
    x = torch.randn(linear.ROWS + 3, 6)
    results = []
    for fast in (True, False):
        y = linear.mlp(x, [(w0, b0)], (w1, None)) if fast else linear._layers(x, [(w0, b0)], (w1, None), (), False)
        results.append([y.detach(), *torch.autograd.grad(y.square().sum(), [w0, b0, w1])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_float64_takes_the_reference(paths):
    m = MLP(8, 16, 1, 2).double()
    with torch.no_grad():
        m(torch.randn(2 * linear.ROWS, 8, dtype=torch.float64))
    assert paths == [False]


def test_input_changed_in_place_after_the_forward_is_refused():
    m = MLP(8, 16, 1, 2)
    x = torch.randn(linear.ROWS + 5, 8)
    out = m(x)
    x.add_(1.0)  # the saved layer inputs no longer match
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
