"""Fast tile binning and blending kernels (fieldforge.kernels.tiles / blend) against the PyTorch
reference tile path (FIELDFORGE_KERNELS=torch) and the dense brute-force compositor: bins,
colour, alpha and every gradient, in RGB, RGB+D and D modes, edge cases, and bit-identical
results on 1 and 2 threads."""

from __future__ import annotations

import pytest
import torch

from fieldforge import kernels
from fieldforge.render.raster_composite import composite_tiles
from fieldforge.render.raster_dense import composite_dense
from fieldforge.render.raster_project import project_gaussians
from fieldforge.render.raster_tiles import bin_tiles

pytest.importorskip("numba")

NAMES = ("means2d", "conics", "opacities", "colors", "background")


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setenv("FIELDFORGE_KERNELS", "numba")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def projected(n: int, w: int, h: int, channels: int = 3, opacity: tuple[float, float] = (0.05, 0.95),
              scale: float = 0.1, seed: int = 0):
    """N projected Gaussians in front of a pinhole camera: means2d, conics, opacities, colours
    [N, channels], background [channels], radii and depths (all visible ones)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.8, 0.5]) + torch.tensor([0, 0, 4.0])
    quats = torch.randn(n, 4, generator=g)
    scales = (torch.rand(n, 3, generator=g) + 0.3) * scale
    opac = torch.rand(n, generator=g) * (opacity[1] - opacity[0]) + opacity[0]
    K = torch.tensor([[w * 0.9, 0, w / 2 + 0.3], [0, w * 0.9, h / 2 - 0.2], [0, 0, 1]])[None]
    radii, m2, depths, conics = project_gaussians(means, quats, scales, torch.eye(4)[None], K, w, h, opacities=opac)
    vis = (radii[0] > 0).all(-1)
    colors = torch.rand(n, channels, generator=g)
    bg = torch.rand(channels, generator=g)
    return ([m2[0][vis], conics[0][vis], opac[vis], colors[vis], bg], radii[0][vis], depths[0][vis])


def run(inputs, radii, depths, w, h, ts, path="numba", seed=1):
    """Bins, colour, alpha and the gradients of sum(colour * u) + sum(alpha * v) on ``path``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIELDFORGE_KERNELS", path)
        bins = bin_tiles(inputs[0], radii, depths, w, h, ts)
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        rgb, alpha = composite_tiles(*leaves, bins, w, h)
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(rgb.shape, generator=g), torch.randn(alpha.shape, generator=g)
    grads = torch.autograd.grad((rgb * u).sum() + (alpha * v).sum(), leaves, allow_unused=True)
    return bins, rgb.detach(), alpha.detach(), [torch.zeros_like(x) if gr is None else gr
                                                for x, gr in zip(leaves, grads)]


def assert_grads_close(got, ref):
    for name, a, b in zip(NAMES, got, ref):
        scale = float(b.abs().max()) if b.numel() else 0.0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale + 1e-7, msg=name)


@pytest.mark.parametrize("ts", [4, 16])
def test_bins_match_reference_with_depth_ties_and_culled(ts):
    inputs, radii, depths = projected(400, 45, 31)
    depths = torch.round(depths * 4) / 4  # many ties, ordered by index
    radii = radii.clone()
    radii[::7] = 0
    fast = bin_tiles(inputs[0], radii, depths, 45, 31, ts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIELDFORGE_KERNELS", "torch")
        ref = bin_tiles(inputs[0], radii, depths, 45, 31, ts)
    assert (fast.tiles_x, fast.tiles_y) == (ref.tiles_x, ref.tiles_y)
    assert torch.equal(fast.offsets, ref.offsets) and torch.equal(fast.ids, ref.ids)
    assert fast.ids.numel() > 600


@pytest.mark.parametrize("channels", [3, 4, 1], ids=["RGB", "RGB+D", "D"])
def test_blend_matches_reference_path_on_1_and_2_threads(channels):
    inputs, radii, depths = projected(300, 37, 29, channels)
    _, r_rgb, r_alpha, r_grads = run(inputs, radii, depths, 37, 29, 16, path="torch")
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(run(inputs, radii, depths, 37, 29, 16))
        _, rgb, alpha, grads = outs[-1]
        torch.testing.assert_close(rgb, r_rgb, rtol=0, atol=2e-6)
        torch.testing.assert_close(alpha, r_alpha, rtol=0, atol=2e-6)
        assert_grads_close(grads, r_grads)
        assert all(g.abs().max() > 0 for g in grads)
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1:3] + tuple(outs[0][3]), outs[1][1:3] + tuple(outs[1][3])))


@pytest.mark.parametrize("opacity", [(0.05, 0.95), (0.9, 1.0)], ids=["soft", "opaque"])
def test_blend_matches_dense_reference(opacity):
    inputs, radii, depths = projected(150, 29, 23, 4, opacity=opacity, scale=0.1 if opacity[0] < 0.5 else 0.3)
    _, rgb, alpha, grads = run(inputs, radii, depths, 29, 23, 8)
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    r_rgb, r_alpha = composite_dense(leaves[0], leaves[1], leaves[2], leaves[3], depths, leaves[4], 29, 23)
    if opacity[0] > 0.5:  # deep stacks: the transmittance stop rule and the 0.99 clamp both fire
        assert (r_alpha > 0.999).sum() > 100 and (leaves[2] > 0.99).any()
    torch.testing.assert_close(rgb, r_rgb.detach(), rtol=0, atol=2e-6)
    torch.testing.assert_close(alpha, r_alpha.detach(), rtol=0, atol=2e-6)
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(rgb.shape, generator=g), torch.randn(alpha.shape, generator=g)
    ref = torch.autograd.grad((r_rgb * u).sum() + (r_alpha * v).sum(), leaves)
    assert_grads_close(grads, ref)


def test_image_independent_of_tile_size():
    inputs, radii, depths = projected(300, 41, 27, 4, opacity=(0.5, 1.0), scale=0.2)
    outs = [run(inputs, radii, depths, 41, 27, ts) for ts in (4, 8, 16)]
    for _, rgb, alpha, grads in outs[1:]:
        assert torch.equal(rgb, outs[0][1]) and torch.equal(alpha, outs[0][2])  # same per-pixel walk
        assert_grads_close(grads, outs[0][3])


def test_threads_bit_identical():
    inputs, radii, depths = projected(500, 53, 37, 4, opacity=(0.3, 1.0), scale=0.15)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(run(inputs, radii, depths, 53, 37, 8))
    (b1, rgb1, a1, g1), (b2, rgb2, a2, g2) = outs
    assert torch.equal(b1.ids, b2.ids) and torch.equal(rgb1, rgb2) and torch.equal(a1, a2)
    assert all(torch.equal(x, y) for x, y in zip(g1, g2))


@pytest.mark.parametrize("case", ["none", "one", "culled"])
def test_edge_cases_match_reference(case):
    inputs, radii, depths = projected(40, 19, 13)
    if case == "none":
        inputs, radii, depths = [t[:0] for t in inputs[:4]] + [inputs[4]], radii[:0], depths[:0]
    elif case == "one":
        inputs, radii, depths = [t[:1] for t in inputs[:4]] + [inputs[4]], radii[:1], depths[:1]
    else:
        radii = torch.zeros_like(radii)
    bins, rgb, alpha, grads = run(inputs, radii, depths, 19, 13, 16)
    _, r_rgb, r_alpha, r_grads = run(inputs, radii, depths, 19, 13, 16, path="torch")
    torch.testing.assert_close(rgb, r_rgb, rtol=0, atol=2e-6)
    torch.testing.assert_close(alpha, r_alpha, rtol=0, atol=2e-6)
    assert_grads_close(grads, r_grads)
    if case != "one":
        assert bins.ids.numel() == 0 and torch.equal(rgb, inputs[4].expand(13, 19, -1)) and not alpha.any()


def test_bad_arguments_raise_value_errors():
    inputs, radii, depths = projected(20, 16, 16)
    bins = bin_tiles(inputs[0], radii, depths, 16, 16, 8)
    with pytest.raises(ValueError, match="radii"):
        bin_tiles(inputs[0], radii[:, :1], depths, 16, 16, 8)
    with pytest.raises(ValueError, match="tile_size"):
        bin_tiles(inputs[0], radii, depths, 16, 16, 0)
    with pytest.raises(ValueError, match="background"):
        composite_tiles(*inputs[:4], inputs[4][:2], bins, 16, 16)
    with pytest.raises(ValueError, match="conics"):
        composite_tiles(inputs[0], inputs[1][:, :2], *inputs[2:], bins, 16, 16)
    with pytest.raises(ValueError, match="bins"):
        composite_tiles(*inputs, bins, 40, 16)


@pytest.mark.parametrize("path", ["numba", "torch"])
def test_dispatch_follows_fieldforge_kernels(monkeypatch, path):
    monkeypatch.setenv("FIELDFORGE_KERNELS", path)
    assert kernels.backend() == path
    inputs, radii, depths = projected(30, 16, 16)
    bins = bin_tiles(inputs[0], radii, depths, 16, 16, 8)
    rgb, _ = composite_tiles(*[t.detach().clone().requires_grad_(True) for t in inputs], bins, 16, 16)
    # the fast path returns the kernel's output; the reference untiles its tile-major output
    assert (type(rgb.grad_fn).__name__ == "CompositeBackward") == (path == "numba")


def test_exp_polynomial_within_one_ulp():
    """The blend kernels' exp(-e) (a polynomial, so that their pixel loops vectorise) against float64."""
    import numba
    import numpy as np

    from fieldforge.kernels.blend import _exp_neg

    @numba.njit
    def evaluate(e):
        out = np.empty_like(e)
        for i in range(e.size):
            out[i] = _exp_neg(e[i])
        return out

    e = np.concatenate([np.linspace(0, 80, 400_001, dtype=np.float32),
                        np.random.default_rng(0).random(20_000, dtype=np.float32) * 80])
    exact = np.exp(-e.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert (np.abs(evaluate(e) - exact) / ulp).max() <= 1.0
