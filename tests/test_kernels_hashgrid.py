"""Hash-grid fast path (numba) against the PyTorch reference: outputs, table and x gradients,
layouts, dimensions, feature counts, boundary points, thread-count independence, fallbacks."""

from __future__ import annotations

import pytest
import torch

from fieldforge.encoders import HashGrid
from fieldforge.kernels import hashgrid as hashgrid_kernel

# (in_dim, n_features, layout, interpolation); layout "dense": every level indexed densely,
# "hashed": every level hashed, "mixed": dense coarse levels then hashed ones
CASES = [(1, 2, "mixed", "linear"), (2, 1, "hashed", "smoothstep"), (2, 4, "dense", "linear"),
         (3, 2, "mixed", "linear"), (3, 2, "mixed", "smoothstep"), (3, 4, "hashed", "linear"),
         (4, 1, "mixed", "smoothstep"), (4, 2, "dense", "linear")]


def make_grid(d: int, n_features: int, layout: str, interpolation: str) -> HashGrid:
    base, log2_t = {"dense": (3, 16), "hashed": (8, 3 + d), "mixed": (4, 3 * d)}[layout]
    g = HashGrid(in_dim=d, n_levels=4, n_features=n_features, log2_hashmap_size=log2_t, base_resolution=base,
                 per_level_scale=1.6, interpolation=interpolation, init_scale=1.0)
    hashed = [i["hashed"] for i in g.level_info()]
    assert {"dense": not any(hashed), "hashed": all(hashed), "mixed": not hashed[0] and hashed[-1]}[layout]
    return g


def points(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Uniform in [-0.1, 1.1]^d (outside the unit cube too), with corners and faces of it exactly."""
    x = torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) * 1.2 - 0.1
    x[:4] = torch.tensor([1.0, 0.0, -1e-3, 1.0 + 1e-3])[:, None]
    x[4, 0] = 1.0
    return x


def run(g: HashGrid, x: torch.Tensor, v: torch.Tensor, x_grad: bool):
    """Output, x gradient (or None) and table gradient of sum(g(x) * v)."""
    g.params.grad = None
    xr = x.clone().requires_grad_(x_grad)
    out = g(xr)
    (out * v).sum().backward()
    return out.detach(), xr.grad, g.params.grad.clone()


def close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() <= rel * (b.abs().max().item() + 1.0)


@pytest.fixture
def threads():
    """Restore torch's thread count after the test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("d,n_features,layout,interpolation", CASES)
def test_fast_path_matches_reference(monkeypatch, d, n_features, layout, interpolation):
    g = make_grid(d, n_features, layout, interpolation)
    x = points(300, d)
    v = torch.randn(300, g.out_dim, generator=torch.Generator().manual_seed(1))
    for x_grad in (False, True):
        monkeypatch.setenv("FIELDFORGE_KERNELS", "numba")
        fast = run(g, x, v, x_grad)
        monkeypatch.setenv("FIELDFORGE_KERNELS", "torch")
        ref = run(g, x, v, x_grad)
        assert close(fast[0], ref[0], 1e-6)  # same float32 arithmetic: equal up to rounding
        assert close(fast[2], ref[2], 1e-5)  # table gradient: summation order differs
        if x_grad:
            assert close(fast[1], ref[1], 1e-5)


def test_no_gradient_and_batch_shape(monkeypatch):
    g = make_grid(3, 2, "mixed", "linear")
    x = points(24, 3).reshape(2, 12, 3)
    with torch.no_grad():
        fast = g(x)
        monkeypatch.setenv("FIELDFORGE_KERNELS", "torch")
        ref = g(x)
    assert fast.shape == (2, 12, g.out_dim) and close(fast, ref, 1e-6)


def test_empty_input():
    g = make_grid(3, 2, "mixed", "linear")
    x = torch.zeros(0, 3, requires_grad=True)
    out = g(x)
    assert out.shape == (0, g.out_dim)
    out.sum().backward()
    assert x.grad.shape == (0, 3) and not g.params.grad.any()


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_bit_identical_across_thread_counts(threads, interpolation):
    g = make_grid(3, 2, "mixed", interpolation)
    x = points(1000, 3)
    v = torch.randn(1000, g.out_dim, generator=torch.Generator().manual_seed(2))
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        results.append(run(g, x, v, True))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_reference_for_float64_and_when_forced(monkeypatch):
    def refuse(*args):
        raise AssertionError("the fast path must not run")

    g = make_grid(2, 2, "mixed", "linear")
    x = points(50, 2)
    expected = g(x)
    monkeypatch.setattr(hashgrid_kernel, "encode", refuse)
    assert close(g(x.double()), expected, 1e-6)  # float32 table, float64 input
    assert close(g.double()(x.double()).float(), expected, 1e-6)  # float64 table
    monkeypatch.setenv("FIELDFORGE_KERNELS", "torch")
    assert close(g.float()(x), expected, 1e-6)


def test_bad_arguments_are_value_errors():
    g = make_grid(3, 2, "mixed", "linear")
    layout = (g.scales, g._mult, g._sizes, g._offsets, g.n_dense, False)
    with pytest.raises(ValueError, match="x must be"):
        hashgrid_kernel.encode(torch.rand(5, 3, dtype=torch.float64), g.params, *layout)
    with pytest.raises(ValueError, match="mult must be"):
        hashgrid_kernel.encode(torch.rand(5, 2), g.params, *layout)
    with pytest.raises(ValueError, match="table must have"):
        hashgrid_kernel.encode(torch.rand(5, 3), g.params[1:], *layout)
