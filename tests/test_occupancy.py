"""Occupancy grid: update parity with nerfacc (CPU), lookup and the sampling lattice by brute force."""

import pytest
import torch

from fieldforge.render.occupancy import OccupancyGrid, ray_aabb_intersect
from fieldforge.scenes.rays import Rays

nerfacc = pytest.importorskip("nerfacc")


def _density(x):
    return (torch.exp(-4 * (x - 0.3).pow(2).sum(-1, keepdim=True)) * 2.0)


@pytest.mark.parametrize("levels", [1, 2])
def test_update_matches_nerfacc(levels):
    aabb = [-1.0, -0.5, -1.0, 1.0, 1.5, 1.0]
    ours = OccupancyGrid(aabb, resolution=16, levels=levels)
    ref = nerfacc.OccGridEstimator(torch.tensor(aabb), resolution=16, levels=levels)
    for step in [0, 16, 32, 300, 316, 332]:  # warm-up (all cells) then random cells
        torch.manual_seed(step)
        ref._update(step=step, occ_eval_fn=lambda x: _density(x) * 0.05, warmup_steps=256)
        torch.manual_seed(step)
        ours.update(step, lambda x: _density(x) * 0.05, warmup_steps=256)
        torch.testing.assert_close(ours.occs, ref.occs)
        assert torch.equal(ours.binaries, ref.binaries)


def test_lookup_matches_nerfacc_query():
    from nerfacc.grid import _query

    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8, levels=3)
    grid.binaries = torch.rand(3, 8, 8, 8) > 0.5
    x = (torch.rand(5000, 3) - 0.5) * 9
    ref = _query(x, grid.binaries, grid.aabbs[0])[0]
    assert torch.equal(grid.occupied(x), ref)


def _brute_force_samples(grid, o, d, near, far, dt):
    """Per-ray Python walk along the lattice near + k dt (the reference; slow on purpose)."""
    out = []
    t0, t1, hit = ray_aabb_intersect(o[None], d[None], grid.aabbs[-1])
    if not bool(hit):
        return out
    k = 0
    while near + (k + 0.5) * dt < min(float(t1), far):
        tm = near + (k + 0.5) * dt
        if tm >= float(t0) and bool(grid.occupied((o + tm * d)[None])[0]):
            out.append(near + k * dt)
        k += 1
    return out


def test_sampling_lattice_against_brute_force():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8)
    grid.binaries = torch.rand(1, 8, 8, 8) > 0.6
    o = torch.randn(12, 3)
    o = o / o.norm(dim=-1, keepdim=True) * 2.5
    d = -o + 0.4 * torch.randn(12, 3)
    d = d / d.norm(dim=-1, keepdim=True)
    o[0] = torch.tensor([0.1, 0.2, 0.0])  # a ray starting inside the box
    dt, near, far = 0.05, 0.3, 3.5
    ri, ts, te = grid.sample(Rays(o, d), near=near, far=far, render_step_size=dt)
    assert torch.all(ri[1:] >= ri[:-1]) and torch.allclose(te - ts, torch.full_like(ts, dt))
    for r in range(len(o)):
        ref = torch.tensor(_brute_force_samples(grid, o[r], d[r], near, far, dt))
        got = ts[ri == r]
        assert got.shape == ref.shape, (r, got.shape, ref.shape)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_sampling_pruning_drops_samples_behind_opaque_surface():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=4)
    grid.binaries[:] = True
    o = torch.tensor([[0.0, 0.0, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]])

    def sigma_fn(ts, te, ri):  # opaque slab for z in [-0.5, 0.5]
        z = (o[ri] + d[ri] * ((ts + te) / 2)[:, None])[:, 2]
        return torch.where(z.abs() < 0.5, torch.full_like(z, 1e3), torch.zeros_like(z))

    _, ts_all, _ = grid.sample(Rays(o, d), render_step_size=0.01)
    _, ts, _ = grid.sample(Rays(o, d), sigma_fn=sigma_fn, render_step_size=0.01, early_stop_eps=1e-4)
    assert len(ts_all) == 200
    # everything after the first few samples in the slab is invisible
    assert float(ts.max()) < 2.5 + 0.05 and len(ts) < 110


@pytest.mark.parametrize("dt,stratified", [(0.01, False), (0.013, True), (0.2, False)])
def test_coarse_empty_space_skip_keeps_exactly_the_fine_samples(dt, stratified):
    # sparse occupancy in a non-cubic box: most lattice runs are skipped by the dilated test
    aabb = [-0.7, -1.2, -0.4, 0.7, 1.2, 1.0]
    grid = OccupancyGrid(aabb, resolution=32)
    g = torch.Generator().manual_seed(0)
    grid.binaries = torch.rand(1, 32, 32, 32, generator=g) > 0.995
    o = torch.randn(3000, 3, generator=g)
    o = o / o.norm(dim=-1, keepdim=True) * 3.0
    d = torch.nn.functional.normalize(-o + 0.6 * torch.randn(3000, 3, generator=g), dim=-1)
    rays = Rays(o, d)
    fast = grid.sample(rays, near=0.5, far=5.0, render_step_size=dt, stratified=stratified,
                       generator=torch.Generator().manual_seed(1))
    grid.coarse_skip = False
    slow = grid.sample(rays, near=0.5, far=5.0, render_step_size=dt, stratified=stratified,
                       generator=torch.Generator().manual_seed(1))
    assert len(slow[0]) > 50
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
