"""SH colour kernel vs the PyTorch reference of ``sh_colors``: colours and the gradients w.r.t.
coefficients and directions for sh_degree 0..4 with more coefficients than needed, zero and
tiny directions, clamped colours, batched leading shapes, N = 0, and bit-identical results on
1 and 2 threads; the SH basis kernel (no gradient) vs ``sh_basis``'s reference for 1..5 bands."""

from __future__ import annotations

import pytest
import torch

from fieldforge.render.rasterize import sh_colors

pytest.importorskip("numba")


def inputs(n: int = 500, k: int = 25, lead: tuple = (), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(lead + (n, 3), generator=g) * 3
    if n >= 2:
        dirs[..., 0, :] = 0.0  # F.normalize's eps branch
        dirs[..., 1, :] = torch.tensor([1e-3, -2e-3, 5e-4])
    coeffs = torch.randn(lead + (n, k, 3), generator=g)  # many colours clamp at 0
    return dirs, coeffs


def run(monkeypatch, backend: str, degree: int, dirs, coeffs):
    monkeypatch.setenv("FIELDFORGE_KERNELS", backend)
    d, c = dirs.clone().requires_grad_(True), coeffs.clone().requires_grad_(True)
    out = sh_colors(degree, d, c)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    return out, torch.zeros_like(d) if d.grad is None else d.grad, c.grad


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_sh_matches_reference(monkeypatch, degree):
    dirs, coeffs = inputs()
    fast = run(monkeypatch, "numba", degree, dirs, coeffs)
    ref = run(monkeypatch, "torch", degree, dirs, coeffs)
    assert (fast[0] == 0).any() and (fast[0] > 0).any()
    for name, f, r in zip(("colours", "grad dirs", "grad coeffs"), fast, ref):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-5 * max(r.abs().max().item(), 1.0), msg=name)
    assert torch.equal(fast[2][:, (degree + 1) ** 2:], torch.zeros_like(fast[2][:, (degree + 1) ** 2:]))


def test_sh_batched_leading_shape_and_empty(monkeypatch):
    dirs, coeffs = inputs(40, 16, lead=(2,))
    fast = run(monkeypatch, "numba", 3, dirs, coeffs)
    ref = run(monkeypatch, "torch", 3, dirs, coeffs)
    for f, r in zip(fast, ref):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-5 * r.abs().max().item())
    out, g_dirs, g_coeffs = run(monkeypatch, "numba", 2, *inputs(0, 9))
    assert out.shape == (0, 3) and g_dirs.shape == (0, 3) and g_coeffs.shape == (0, 9, 3)


def test_sh_threads_bit_identical(monkeypatch):
    dirs, coeffs = inputs(5000, 16, seed=2)
    previous = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(run(monkeypatch, "numba", 3, dirs, coeffs))
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_sh_rejects_bad_arguments():
    dirs, coeffs = inputs(10, 9)
    with pytest.raises(ValueError, match="coeffs"):
        sh_colors(3, dirs, coeffs)
    with pytest.raises(ValueError, match="sh_degree"):
        sh_colors(5, dirs, coeffs)
    with pytest.raises(ValueError, match="dirs"):
        sh_colors(1, dirs[:, :2], coeffs)


@pytest.mark.parametrize("degree", [1, 2, 3, 4, 5])
def test_basis_matches_reference(monkeypatch, degree):
    from fieldforge.encoders.sh import sh_basis
    from fieldforge.kernels import sh as sh_kernel

    calls = []
    inner = sh_kernel.basis
    monkeypatch.setattr(sh_kernel, "basis", lambda d, k: calls.append(k) or inner(d, k))
    d = torch.randn(2, 333, 3, generator=torch.Generator().manual_seed(degree)) * 1.5  # not unit: used as given
    fast = sh_basis(d, degree)
    assert calls == [degree]
    monkeypatch.setenv("FIELDFORGE_KERNELS", "torch")
    ref = sh_basis(d, degree)
    assert len(calls) == 1 and fast.shape == ref.shape == (2, 333, degree * degree)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert sh_basis(d[:0], degree).shape == (0, 333, degree * degree)


def test_basis_with_gradient_takes_the_reference(monkeypatch):
    from fieldforge.encoders.sh import sh_basis
    from fieldforge.kernels import sh as sh_kernel

    monkeypatch.setattr(sh_kernel, "basis", lambda d, k: pytest.fail("the kernel has no gradient"))
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1).requires_grad_(True)
    sh_basis(d, 4).sum().backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
