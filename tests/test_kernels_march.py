"""Fast occupancy-grid traversal and packed compositing kernels against the PyTorch reference."""

from contextlib import contextmanager

import pytest
import torch

from fieldforge.render import volume
from fieldforge.render.occupancy import OccupancyGrid
from fieldforge.scenes.rays import Rays

pytest.importorskip("numba")


@contextmanager
def _backend(monkeypatch, name: str, threads: int = 1):
    old = torch.get_num_threads()
    monkeypatch.setenv("FIELDFORGE_KERNELS", name)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------- traversal
AABB = [-0.7, -1.2, -0.4, 0.7, 1.2, 1.0]


def _rays(n: int, g: torch.Generator) -> Rays:
    """Random rays toward the box plus the awkward cases: origins inside, axis-parallel rays,
    rays on cell faces and on the box's faces, rays missing the box."""
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    d = torch.nn.functional.normalize(-o + 0.6 * torch.randn(n, 3, generator=g), dim=-1)
    o[:8] = (torch.rand(8, 3, generator=g) - 0.5) * 0.8  # inside
    d[8:14] = torch.eye(3).repeat(2, 1) * torch.tensor([1.0, -1.0]).repeat_interleave(3)[:, None]
    o[8:14] = (torch.rand(6, 3, generator=g) - 0.5) * 0.6 - d[8:14] * 3
    o[14:17] = torch.tensor([[0.0, 0.3, -3.0], [0.7, 0.0, -3.0], [-0.7, 1.2, -3.0]])  # on cell and box faces
    d[14:17] = torch.tensor([0.0, 0.0, 1.0])
    o[17], d[17] = torch.tensor([0.0, 5.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])  # misses
    o[18:20] = torch.tensor([[0.0, 0.0, 0.3], [0.1, -0.2, 0.0]])
    d[18:20] = torch.nn.functional.normalize(torch.tensor([[1.0, 1e-7, 0.0], [0.0, 1.0, 1e-3]]), dim=-1)  # grazing
    return Rays(o, d)


def _sample_both(monkeypatch, grid, rays, threads=1, **kw):
    out = {}
    for name in ("numba", "torch"):
        with _backend(monkeypatch, name, threads):
            out[name] = grid.sample(rays, generator=torch.Generator().manual_seed(1), **kw)
    return out["numba"], out["torch"]


@pytest.mark.parametrize("levels,res,p_empty", [(1, 32, 0.99), (1, 16, 0.5), (2, 8, 0.7), (3, 5, 0.6), (2, 12, 0.95)])
@pytest.mark.parametrize("stratified", [False, True])
def test_traversal_equals_reference(monkeypatch, levels, res, p_empty, stratified):
    g = torch.Generator().manual_seed(res + levels)
    grid = OccupancyGrid(AABB, resolution=res, levels=levels)
    grid.binaries = torch.rand(levels, res, res, res, generator=g) > p_empty
    rays = _rays(400, g)
    for near, far, dt in [(0.0, 1e10, 0.013), (0.5, 3.5, 0.031), (2.9, 3.1, 0.2)]:
        fast, ref = _sample_both(monkeypatch, grid, rays, near=near, far=far, render_step_size=dt,
                                 stratified=stratified)
        for a, b in zip(fast, ref):
            assert a.dtype == b.dtype and torch.equal(a, b)
    assert len(ref[0]) > 0 or p_empty > 0.9


@pytest.mark.parametrize("levels,res", [(1, 32), (2, 16), (3, 8)])
def test_traversal_of_a_compact_occupied_region_equals_reference(monkeypatch, levels, res):
    """Occupied cells only in a small corner region of each level (the walk is clipped to their box):
    the same samples as the reference, including rays that graze the region."""
    g = torch.Generator().manual_seed(levels)
    grid = OccupancyGrid(AABB, resolution=res, levels=levels)
    grid.binaries[:] = False
    a, b = res // 4, res // 4 + max(2, res // 8)
    grid.binaries[:, a:b, a + 1:b, a:b + 1] = torch.rand(levels, b - a, b - a - 1, b - a + 1, generator=g) > 0.3
    rays = _rays(500, g)
    for near, far, dt in [(0.0, 1e10, 0.013), (0.5, 3.5, 0.004)]:
        fast, ref = _sample_both(monkeypatch, grid, rays, near=near, far=far, render_step_size=dt)
        assert all(torch.equal(x, y) for x, y in zip(fast, ref)) and len(ref[0]) > 0


@pytest.mark.parametrize("fill", [False, True])
def test_traversal_empty_and_full_grids_and_zero_rays(monkeypatch, fill):
    grid = OccupancyGrid(AABB, resolution=8, levels=2)
    grid.binaries[:] = fill
    rays = _rays(64, torch.Generator().manual_seed(0))
    fast, ref = _sample_both(monkeypatch, grid, rays, render_step_size=0.02)
    assert all(torch.equal(a, b) for a, b in zip(fast, ref)) and (len(ref[0]) > 0) == fill
    none = Rays(torch.zeros(0, 3), torch.zeros(0, 3))
    fast, ref = _sample_both(monkeypatch, grid, none, render_step_size=0.02)
    assert all(a.shape == (0,) and torch.equal(a, b) for a, b in zip(fast, ref))


def test_traversal_with_pruning_and_thread_counts(monkeypatch):
    g = torch.Generator().manual_seed(5)
    grid = OccupancyGrid(AABB, resolution=16)
    grid.binaries = torch.rand(1, 16, 16, 16, generator=g) > 0.3
    grid.occs[:] = 0.5
    rays = _rays(300, g)

    def sigma_fn(ts, te, ri):  # a dense slab |z| < 0.2 and thin fog elsewhere
        z = (rays.origins[ri] + rays.directions[ri] * ((ts + te) / 2)[:, None])[:, 2]
        return torch.where(z.abs() < 0.2, torch.full_like(z, 300.0), torch.full_like(z, 0.5))

    kw = dict(sigma_fn=sigma_fn, render_step_size=0.02, early_stop_eps=1e-3, alpha_thre=0.005, stratified=True)
    fast1, ref = _sample_both(monkeypatch, grid, rays, threads=1, **kw)
    fast2, _ = _sample_both(monkeypatch, grid, rays, threads=2, **kw)
    for a, b, c in zip(fast1, fast2, ref):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_traversal_sees_in_place_grid_changes(monkeypatch):
    grid = OccupancyGrid(AABB, resolution=8)
    rays = _rays(32, torch.Generator().manual_seed(2))
    with _backend(monkeypatch, "numba"):
        assert len(grid.sample(rays, render_step_size=0.05)[0]) == 0
        grid.binaries[0, 2:6] = True
        fast = grid.sample(rays, render_step_size=0.05)
    with _backend(monkeypatch, "torch"):
        ref = grid.sample(rays, render_step_size=0.05)
    assert len(ref[0]) > 0 and all(torch.equal(a, b) for a, b in zip(fast, ref))


@pytest.mark.parametrize("levels,res,p_empty", [(1, 16, 0.5), (2, 8, 0.7), (1, 32, 0.99)])
@pytest.mark.parametrize("threads", [1, 2])
def test_walking_a_few_samples_at_a_time_gives_every_sample_once(monkeypatch, levels, res, p_empty, threads):
    """``lattice().advance`` in uneven steps over uneven subsets of rays, on both paths, yields per
    ray exactly the samples of ``all()`` (which equals ``sample``), in order."""
    g = torch.Generator().manual_seed(res)
    grid = OccupancyGrid(AABB, resolution=res, levels=levels)
    grid.binaries = torch.rand(levels, res, res, res, generator=g) > p_empty
    rays = _rays(300, g)
    for name in ("numba", "torch"):
        with _backend(monkeypatch, name, threads):
            want_r, want_t = grid.sample(rays, render_step_size=0.02)[:2]
            lattice = grid.lattice(rays, render_step_size=0.02)
            got: list[list[float]] = [[] for _ in range(len(rays))]
            alive, step = torch.arange(len(rays)), 1
            while len(alive):
                group = alive[torch.randperm(len(alive), generator=g)][: max(1, len(alive) * 2 // 3)]
                t, n = lattice.advance(group, step)
                assert t.shape == (len(group), step) and bool((n <= step).all())
                for r, row, k in zip(group.tolist(), t, n.tolist()):
                    got[r] += row[:k].tolist()
                done = group[n < step]  # fewer than asked: the ray has no more
                alive = alive[~torch.isin(alive, done)]
                step = step % 5 + 1
        for r in range(len(rays)):
            assert got[r] == want_t[want_r == r].tolist(), (name, r)
    assert len(want_r) > 0


# ------------------------------------------------------------------------------------ compositing
def _packed(counts, g, scale=3.0):
    counts = torch.tensor(counts)
    ri = torch.arange(len(counts)).repeat_interleave(counts)
    S = len(ri)
    ts = torch.rand(S, generator=g) * 4
    te = ts + torch.rand(S, generator=g) * 0.3
    return ri, ts, te, torch.rand(S, generator=g) * scale, len(counts)


def _composite_run(monkeypatch, name, threads, ri, ts, te, sig, n, rgb, extra, bg):
    with _backend(monkeypatch, name, threads):
        leaves = [x.detach().clone().requires_grad_() for x in (sig, rgb, extra)]
        out = volume.composite(ts, te, ri, n, leaves[0], leaves[1], bg, {"normal": leaves[2]})
        g = torch.Generator().manual_seed(9)
        loss = sum((v * torch.randn(v.shape, generator=g).to(v.dtype)).sum() for _, v in sorted(out.items()))
        grads = torch.autograd.grad(loss, leaves)
    return {k: v.detach() for k, v in out.items()}, grads


@pytest.mark.parametrize("bg", [None, torch.tensor([1.0, 0.5, 0.0])])
def test_composite_forward_and_gradients_match_reference(monkeypatch, bg):
    g = torch.Generator().manual_seed(0)
    ri, ts, te, sig, n = _packed([0, 5, 1, 12, 0, 7, 1, 200, 3, 0], g)
    sig[ri == 7] *= 10  # a ray that terminates early
    rgb, extra = torch.rand(len(ri), 3, generator=g), torch.randn(len(ri), 2, generator=g)
    args = (ri, ts, te, sig, n, rgb, extra, bg)
    fast, fast_grads = _composite_run(monkeypatch, "numba", 1, *args)
    ref, ref_grads = _composite_run(monkeypatch, "torch", 1, *args)
    f64 = [x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in args]
    ref64, ref64_grads = _composite_run(monkeypatch, "torch", 1, *f64)
    assert fast.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(fast[k].double(), ref64[k], atol=2e-6, rtol=1e-5)
    for a, b, c in zip(fast_grads, ref_grads, ref64_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.double(), c, atol=1e-5, rtol=1e-5)
    assert torch.all(fast["opacity"][torch.tensor([0, 4, 9])] == 0)  # empty rays
    two, two_grads = _composite_run(monkeypatch, "numba", 2, *args)
    assert all(torch.equal(fast[k], two[k]) for k in fast)
    assert all(torch.equal(a, b) for a, b in zip(fast_grads, two_grads))


def test_weights_transmittance_alpha_and_their_gradients(monkeypatch):
    g = torch.Generator().manual_seed(1)
    ri, ts, te, sig, n = _packed([3, 0, 40, 1, 9], g, scale=6.0)
    outs = {}
    for name in ("numba", "torch"):
        with _backend(monkeypatch, name):
            s = sig.clone().requires_grad_()
            w, T, a = volume.render_weight_from_density(ts, te, s, ri, n)
            gw = torch.randn(3, len(ri), generator=torch.Generator().manual_seed(3))
            (grad,) = torch.autograd.grad((w * gw[0] + T * gw[1] + a * gw[2]).sum(), s)
            outs[name] = (w, T, a, grad)
    for x, y in zip(outs["numba"], outs["torch"]):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_visibility_mask_matches_reference(monkeypatch):
    g = torch.Generator().manual_seed(2)
    ri, ts, te, sig, n = _packed([30] * 20 + [0, 1], g, scale=8.0)
    masks = {}
    for name in ("numba", "torch"):
        with _backend(monkeypatch, name):
            masks[name] = volume.render_visibility_from_density(ts, te, sig, ri, n, early_stop_eps=1e-2,
                                                                alpha_thre=0.05)
    assert torch.equal(masks["numba"], masks["torch"]) and 0 < int(masks["torch"].sum()) < len(ri)


def test_composite_no_samples_and_invalid_packing(monkeypatch):
    with _backend(monkeypatch, "numba"):
        z = torch.zeros(0)
        out = volume.composite(z, z, torch.zeros(0, dtype=torch.long), 3, z, torch.zeros(0, 3), torch.ones(3))
        assert torch.equal(out["rgb"], torch.ones(3, 3)) and torch.equal(out["opacity"], torch.zeros(3, 1))
        ts = torch.rand(4)
        with pytest.raises(ValueError, match="ray_indices"):
            volume.composite(ts, ts + 0.1, torch.tensor([0, 1, 0, 1]), 2, torch.rand(4), torch.rand(4, 3))
        with pytest.raises(ValueError, match="ray_indices"):
            volume.render_weight_from_density(ts, ts + 0.1, torch.rand(4), torch.tensor([0, 0, 1, 2]), 2)
        with pytest.raises(ValueError, match="sigmas"):
            volume.render_weight_from_density(ts, ts + 0.1, torch.rand(4, 1), torch.zeros(4, dtype=torch.long), 1)
        with pytest.raises(ValueError, match="rgbs"):
            volume.composite(ts, ts + 0.1, torch.zeros(4, dtype=torch.long), 1, torch.rand(4), torch.rand(3, 3))
