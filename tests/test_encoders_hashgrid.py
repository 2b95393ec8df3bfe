"""Hash grid: tiny-cuda-nn level layout, hand-computed indices, and parity with a slow float64 loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fieldforge.encoders import HashGrid

PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)


def tcnn_grid_index(hashed_type: bool, size: int, res: int, pos: list[int]) -> int:
    """tiny-cuda-nn grid_index (common_device.h) in Python ints with explicit uint32 wrap."""
    stride, index = 1, 0
    for k in range(len(pos)):
        if stride > size:
            break
        index = (index + pos[k] * stride) % 2**32
        stride *= res
    if hashed_type and size < stride:
        index = 0
        for k, p in enumerate(pos):
            index ^= (p * PRIMES[k]) % 2**32
    return index % size


def slow_taps(x: np.ndarray, n_levels: int, log2_t: int, n_min: int, b: float, smooth: bool = False):
    """Per-point, per-level, per-corner loop in float64 (tiny-cuda-nn semantics).

    Yields (point, level, flat table row, weight); the encoding is sum of weight * table[row].
    """
    d = x.shape[1]
    offset = 0
    for lvl in range(n_levels):
        scale = float(np.exp2(np.float32(lvl) * np.float32(math.log2(b))) * np.float32(n_min) - np.float32(1))
        res = math.ceil(scale) + 1
        size = min(-(-res**d // 8) * 8, 2**log2_t)
        for i in range(x.shape[0]):
            u = x[i] * scale + 0.5
            i0 = np.floor(u)
            w = u - i0
            if smooth:
                w = w * w * (3 - 2 * w)
            for corner in itertools.product((0, 1), repeat=d):
                pos = [int(i0[k] + corner[k]) % 2**32 for k in range(d)]
                wt = np.prod([w[k] if corner[k] else 1 - w[k] for k in range(d)])
                yield i, lvl, offset + tcnn_grid_index(True, size, res, pos), wt
        offset += size


def slow_reference(x: np.ndarray, table: np.ndarray, **cfg) -> np.ndarray:
    f = table.shape[1]
    out = np.zeros((x.shape[0], cfg["n_levels"] * f))
    for i, lvl, row, wt in slow_taps(x, **cfg):
        out[i, lvl * f:(lvl + 1) * f] += wt * table[row]
    return out


def test_tcnn_default_levels():
    g = HashGrid()  # d=3, 16 levels, 2 features, T=2^19, N_min=16, b=2
    info = g.level_info()
    assert [i["resolution"] for i in info[:4]] == [16, 32, 64, 128]
    assert [i["size"] for i in info[:4]] == [4096, 32768, 262144, 524288]
    assert [i["hashed"] for i in info[:4]] == [False, False, False, True]
    assert g.out_dim == 32 and g.params.shape == (4096 + 32768 + 262144 + 13 * 524288, 2)
    assert g.params.abs().max() <= 1e-4


def test_instant_ngp_per_level_scale():
    g = HashGrid(in_dim=3, n_levels=16, base_resolution=16, max_resolution=2048)
    assert g.per_level_scale == pytest.approx(128 ** (1 / 15))
    for lvl, i in enumerate(g.level_info()):
        s = 16 * 128 ** (lvl / 15) - 1
        assert i["scale"] == pytest.approx(s, rel=1e-6)
        assert i["resolution"] == math.ceil(s - 1e-4) + 1 or i["resolution"] == math.ceil(s + 1e-4) + 1
        assert i["size"] == min(-(-i["resolution"] ** 3 // 8) * 8, 2**19)


def test_roundup8_and_offsets():
    g = HashGrid(in_dim=2, n_levels=3, base_resolution=3, per_level_scale=1.5, log2_hashmap_size=10)
    # scales 2, 3.5, 5.75 -> res 3, 5, 7 -> 9, 25, 49 entries -> rounded up to 16, 32, 56
    assert g.resolutions == [3, 5, 7] and g.table_sizes == [16, 32, 56] and g.offsets == [0, 16, 48]


def test_dense_index_and_boundary_wrap_by_hand():
    g = HashGrid(in_dim=2, n_levels=1, n_features=1, base_resolution=4, log2_hashmap_size=8)
    assert g.resolutions == [4] and g.table_sizes == [16]
    with torch.no_grad():
        g.params.copy_(torch.arange(16.0)[:, None])
    # x=(0,0): u=0.5 -> corners (0,0),(1,0),(0,1),(1,1) = rows 0,1,4,5 with weight 1/4
    # x=(1,1): u=3.5 -> rows 15, (4+12)%16=0, (3+16)%16=3, (4+16)%16=4
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    idx, w = g.corners(x)
    assert idx[0].T.tolist() == [[0, 1, 4, 5], [15, 0, 3, 4]]
    assert torch.allclose(w, torch.full_like(w, 0.25))
    assert torch.allclose(g(x)[:, 0], torch.tensor([2.5, 5.5]))


def test_hashed_index_by_hand():
    g = HashGrid(in_dim=2, n_levels=1, n_features=1, base_resolution=8, log2_hashmap_size=4)
    assert g.level_info()[0]["hashed"] and g.table_sizes == [16]
    x = torch.tensor([[2.0 / 7, 3.0 / 7]])  # u = (2.5, 3.5) -> i0 = (2, 3)
    idx, _ = g.corners(x)
    expect = [((i * 1) ^ (j * 2654435761 % 2**32)) % 16 for j in (3, 4) for i in (2, 3)]
    assert idx[0, :, 0].tolist() == expect
    assert expect[0] == 1  # 3 * 2654435761 mod 2^32 = 3668339987 = ...0011b, xor 2 -> 1


@pytest.mark.parametrize("d,smooth", [(3, False), (2, True)])
def test_parity_with_slow_reference(d, smooth):
    cfg = dict(n_levels=4, log2_t=12, n_min=4, b=2.0) if d == 3 else dict(n_levels=3, log2_t=6, n_min=5, b=1.7)
    g = HashGrid(in_dim=d, n_levels=cfg["n_levels"], n_features=2, log2_hashmap_size=cfg["log2_t"],
                 base_resolution=cfg["n_min"], per_level_scale=cfg["b"],
                 interpolation="smoothstep" if smooth else "linear", init_scale=1.0)
    assert any(i["hashed"] for i in g.level_info()) and not all(i["hashed"] for i in g.level_info())
    x = torch.rand(60, d)
    x[:4] = torch.tensor([[1.0] * d, [0.0] * d, [1.0] + [0.5] * (d - 1), [0.999999] * d])  # boundary wrap
    ref = slow_reference(x.double().numpy(), g.params.detach().double().numpy(), smooth=smooth, **cfg)
    assert np.allclose(g(x).detach().numpy(), ref, atol=1e-5)


def test_table_gradient_fused_equals_autograd_and_reference():
    cfg = dict(n_levels=4, log2_t=10, n_min=4, b=2.0)
    g = HashGrid(in_dim=3, n_levels=4, n_features=2, log2_hashmap_size=10, base_resolution=4, init_scale=1.0)
    x = torch.rand(200, 3)
    v = torch.randn(200, g.out_dim)
    (g(x) * v).sum().backward()  # fused path (x needs no grad)
    fused = g.params.grad.clone()
    g.params.grad = None
    (g(x.clone().requires_grad_(True)) * v).sum().backward()  # plain autograd path
    assert torch.allclose(fused, g.params.grad, atol=1e-5)
    ref = np.zeros(g.params.shape)
    vv = v.double().numpy()
    for i, lvl, row, wt in slow_taps(x.double().numpy(), **cfg):
        ref[row] += wt * vv[i, 2 * lvl:2 * lvl + 2]
    assert np.allclose(fused.numpy(), ref, atol=1e-4)


def test_x_gradient_gradcheck_double():
    g = HashGrid(in_dim=3, n_levels=3, n_features=2, log2_hashmap_size=8, base_resolution=3,
                 interpolation="smoothstep", init_scale=1.0).double()
    x = (torch.rand(8, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: g(p), (x,))


def test_shapes_and_bad_arguments():
    g = HashGrid(in_dim=2, n_levels=2, log2_hashmap_size=8)
    assert g(torch.rand(5, 7, 2)).shape == (5, 7, 4)
    with pytest.raises(ValueError, match="expected input"):
        g(torch.rand(5, 3))
    with pytest.raises(ValueError, match="n_levels"):
        HashGrid(n_levels=0)
    with pytest.raises(ValueError, match="per_level_scale"):
        HashGrid(per_level_scale=-1.0)
    with pytest.raises(ValueError, match="interpolation"):
        HashGrid(interpolation="cubic")
