"""SAPE's spatial controller and FreSh's selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fieldforge.encoders import SAPE, FourierFeatures, FrequencyEncoding
from fieldforge.encoders import fresh


def make_sape(res=8, eps=1e-3, d=2):
    return SAPE(FourierFeatures(d, n_features=6, sigma=2.0, include_input=True), res=res, eps=eps)


def test_sape_initial_mask_is_identity_only_and_gradients_flow():
    s = make_sape()
    x = (torch.rand(50, 2) * 2 - 1).requires_grad_(True)
    m = s.mask(x)
    assert m.shape == (50, 2 + 12)
    assert torch.all(m[:, :2] == 1) and torch.all(m[:, 2:] == 0)
    out = s(x)
    assert out.shape == (50, 14)
    out[:, :2].sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_sape_mask_never_decreases_and_freezes_where_converged():
    torch.manual_seed(0)
    s = make_sape(res=16, eps=1e-2)
    x = torch.rand(4000, 2) * 2 - 1
    prev = s.mask(x)
    for step in range(6):
        # error high in the left half, zero in the right half
        err = torch.where(x[:, 0] < 0, torch.full((4000,), 1.0), torch.zeros(4000))
        s.accumulate(x, err)
        s.advance()
        cur = s.mask(x)
        assert torch.all(cur >= prev - 1e-6)
        prev = cur
    left, right = x[:, 0] < -0.6, x[:, 0] > 0.85  # blur reaches 2 + 2 cells (k=5) past the edge
    assert torch.allclose(prev[left], torch.ones_like(prev[left]))  # all 6 blocks unlocked
    assert torch.all(prev[right][:, 2:] == 0)  # converged before the first block: frozen
    # frozen cells stay frozen even if the error later rises (the stop is permanent)
    s.accumulate(x, torch.ones(4000))
    s.advance()
    assert torch.all(s.mask(x)[right][:, 2:] == 0)


def test_sape_unvisited_cells_take_neighbour_mean():
    s = make_sape(res=8, eps=0.5)
    # visit only cell row/col 3..4 region with loss 1: neighbours' fill keeps the whole vicinity going
    x = torch.zeros(10, 2)
    s.accumulate(x, torch.ones(10))
    s.advance()
    level = s.level.reshape(8, 8)
    # blurred loss at the centre exceeds eps only near the visited cells
    assert level[3:5, 3:5].min() == 1 and level[0, 0] == 0 and level[7, 7] == 0


def test_sape_block_iterations_schedule():
    s = SAPE(FourierFeatures(2, 256, 20.0, include_input=True), res=16)
    assert s.block_iterations(5000) == 9  # spec: 5000 iterations, 256 blocks
    assert SAPE(FrequencyEncoding(3, 4), res=4).mask(torch.zeros(1, 3)).shape == (1, 27)


def test_sape_bad_arguments():
    with pytest.raises(ValueError):
        SAPE(FourierFeatures(1, 4), res=8)
    with pytest.raises(ValueError):
        make_sape(eps=0.0)
    with pytest.raises(ValueError, match="expected input"):
        make_sape()(torch.zeros(4, 3))


def brute_spectrum(y: np.ndarray, size: int) -> np.ndarray:
    mag = np.abs(np.fft.fft2(y, axes=(1, 2))).sum(0)
    out = np.zeros(size)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            if 1 <= i + j <= size:
                out[i + j - 1] += mag[i, j]
    return out


def test_fresh_spectrum_binning_against_loops():
    y = torch.rand(3, 32, 32, dtype=torch.float64)
    assert np.allclose(fresh.image_spectrum(y, 16).numpy(), brute_spectrum(y.numpy(), 16))


class Wave(nn.Module):
    """A 'model' whose output at init is a plane wave of a given frequency with a random phase."""

    def __init__(self, freq: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        self.freq = freq

    def forward(self, coords):
        return torch.cos(2 * math.pi * self.freq * coords[..., :1] + self.phase)


def test_fresh_picks_candidate_with_nearest_spectrum():
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n) / n, torch.arange(n) / n, indexing="ij")
    coords = torch.stack([xx, yy], -1).double()
    target = 0.5 + 0.3 * torch.cos(2 * math.pi * 7 * coords[..., :1] + 0.3)
    res = fresh.select(Wave, [2, 5, 8, 12], coords, target, n_seeds=3, spectrum_size=16)
    assert res.chosen == 8 and len(res.distances) == 4
    assert np.argsort(res.distances).tolist()[:2] == [2, 1]  # |8-7| < |5-7|
    # the distances are W1 between point masses at bins (f-1) and 6: exactly |f - 7|
    assert np.allclose(res.distances, [5, 2, 1, 5], atol=1e-6)
    with pytest.raises(ValueError):
        fresh.select(Wave, [], coords, target)
