"""Less work in the marcher and the occupancy grid: pruning in passes keeps the samples of the
reference rule (T >= early_stop_eps, alpha >= alpha_thre) while evaluating densities only up to
each ray's termination, and strided grid updates visit every cell and converge like nerfacc's rule."""

import pytest
import torch

from fieldforge.fields.base import Field
from fieldforge.render.marcher import render_rays
from fieldforge.render.occupancy import OccupancyGrid
from fieldforge.render.volume import composite
from fieldforge.scenes.rays import Rays


class Slab(Field):
    """Analytic field: a dense slab at z in [-0.6, -0.3] and a faint haze elsewhere (a ray through
    an occupied box); counts density and full evaluations."""

    def __init__(self, peak: float):
        super().__init__(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
        self.peak, self.density_calls, self.forward_calls = peak, 0, 0

    def density(self, x, t=None):
        self.density_calls += len(x)
        slab = torch.sigmoid(40 * (x[:, 2:] + 0.6)) * torch.sigmoid(40 * (-0.3 - x[:, 2:]))
        return self.peak * slab * (1 + x[:, :1].sin()) + 0.05

    def forward(self, x, d, t=None):
        self.forward_calls += len(x)
        sigma = self.density(x)
        self.density_calls -= len(x)
        return {"density": sigma, "rgb": torch.sigmoid(3 * x + d)}


def _rays(n: int, seed: int = 0) -> Rays:
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, -3.0]) + 0.5 * torch.randn(n, 3, generator=g)
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + 0.2 * torch.randn(n, 3, generator=g), dim=-1)
    return Rays(o, d)


def _full_grid() -> OccupancyGrid:
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16)
    grid.occs.fill_(1.0)
    grid.binaries[:] = True
    return grid


def _reference(field, grid, rays, background, seed, **kw):
    """render_rays as before the passes: the estimator prunes with densities of every candidate."""

    def sigma_fn(ts, te, ri):
        return field.density(rays.origins[ri] + rays.directions[ri] * ((ts + te) / 2)[:, None])

    g = torch.Generator().manual_seed(seed)
    ri, t0, t1 = grid.sample(rays, sigma_fn, stratified=True, generator=g, **kw)
    mid = (t0 + t1) / 2
    out = field(rays.origins[ri] + rays.directions[ri] * mid[:, None], rays.directions[ri])
    return composite(t0, t1, ri, len(rays), out["density"].reshape(-1), out["rgb"], background)


KW = dict(near=0.5, far=6.0, render_step_size=0.01)


@pytest.mark.parametrize("peak,eps,alpha_thre,per_pass", [(50.0, 1e-4, 0.0, 32), (500.0, 1e-2, 0.0, 5),
                                                          (50.0, 1e-4, 0.05, 8), (0.0, 1e-4, 0.0, 16)])
def test_pruning_in_passes_keeps_the_reference_samples(peak, eps, alpha_thre, per_pass):
    field, grid, rays = Slab(peak), _full_grid(), _rays(300)
    kw = dict(KW, early_stop_eps=eps, alpha_thre=alpha_thre)
    with torch.no_grad():
        ref = _reference(field, grid, rays, None, 3, **kw)
        visible_t = len(_reference(field, grid, rays, None, 3, **{**kw, "alpha_thre": 0.0})["weights"])
    candidates = len(grid.sample(rays, None, **KW)[0])
    field.density_calls = field.forward_calls = 0
    out = render_rays(field, grid, rays, None, stratified=True, generator=torch.Generator().manual_seed(3),
                      per_pass=per_pass, **kw)
    assert int(out["num_samples"]) == len(ref["weights"]) == field.forward_calls
    for k in ("rgb", "opacity", "depth"):
        assert torch.equal(out[k], ref[k]), k
    # densities for pruning: up to each ray's termination pass only (a sample per ray at most
    # per_pass - 1 past its last sample with T >= eps)
    assert field.density_calls <= visible_t + (per_pass - 1) * len(rays)
    if peak >= 50:
        assert field.density_calls < 0.6 * candidates


@pytest.mark.parametrize("threads", [1, 2])
def test_pruning_gradients_match_the_reference_path(threads):
    scale = torch.ones(3, requires_grad=True)

    class Scaled(Slab):
        def forward(self, x, d, t=None):
            out = super().forward(x, d, t)
            return {"density": out["density"] * scale[0], "rgb": out["rgb"] * scale}

    field, grid, rays, bg = Scaled(50.0), _full_grid(), _rays(64, seed=1), torch.ones(3)
    kw = dict(KW, early_stop_eps=1e-3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = render_rays(field, grid, rays, bg, stratified=True, generator=torch.Generator().manual_seed(5), **kw)
        (g_new,) = torch.autograd.grad(out["rgb"].square().sum(), scale)
        ref = _reference(field, grid, rays, bg, 5, **kw)
        (g_ref,) = torch.autograd.grad(ref["rgb"].square().sum(), scale)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out["rgb"], ref["rgb"])
    assert torch.equal(g_new, g_ref)


def _blob(x):
    return 4.0 * torch.exp(-((x - 0.2) ** 2).sum(-1, keepdim=True) / 0.05)


def test_strided_warmup_visits_every_cell_once_per_cycle():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8)
    seen = []

    def record(x):
        seen.append(x)
        return _blob(x)

    grid.update_every_n_steps(0, record, n=4, stride=2)
    assert len(seen[0]) == 8**3  # the first update is complete
    counts = torch.zeros(8**3, dtype=torch.long)
    for step in range(4, 4 * 9, 4):  # 8 updates: one cycle of the 2x2x2 sub-lattices
        seen.clear()
        grid.update_every_n_steps(step, record, n=4, stride=2)
        x = torch.cat(seen)
        assert len(x) == 8**3 // 8
        cell = ((x + 1) / 2 * 8).long()
        counts += torch.bincount((cell[:, 0] * 8 + cell[:, 1]) * 8 + cell[:, 2], minlength=8**3)
    assert torch.equal(counts, torch.ones_like(counts))


def test_strided_decay_per_unit_time_matches_nerfacc_rule():
    grids = [_full_grid(), _full_grid()]
    for step in range(16, 16 * 9, 16):  # 8 warm-up updates of a field that became empty
        grids[0].update_every_n_steps(step, lambda x: torch.zeros(len(x), 1), stride=1)
        grids[1].update_every_n_steps(step, lambda x: torch.zeros(len(x), 1), stride=2)
    torch.testing.assert_close(grids[1].occs, grids[0].occs)
    torch.testing.assert_close(grids[0].occs, torch.full_like(grids[0].occs, 0.95**8))


def test_strided_updates_converge_to_the_known_density():
    torch.manual_seed(0)
    grids = {s: OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=16) for s in (1, 2)}
    for s, grid in grids.items():
        for step in range(0, 16 * 40, 16):  # 16 warm-up updates, then 24 of random and occupied cells
            grid.update_every_n_steps(step, lambda x: _blob(x) * 0.05, stride=s)
    centres = (grids[1].grid_coords + 0.5) / 16 * 2 - 1
    truth = (_blob(centres)[:, 0] * 0.05 > 0.01).reshape(16, 16, 16)
    near_empty = (_blob(centres)[:, 0] * 0.05 < 2e-4).reshape(16, 16, 16)  # the threshold (mean occupancy) is ~2e-3
    for grid in grids.values():
        assert grid.binaries[0][truth].all()
        assert not grid.binaries[0][near_empty].any()
    agree = (grids[1].binaries == grids[2].binaries).float().mean()
    assert agree > 0.98


def test_update_rejects_a_bad_stride():
    with pytest.raises(ValueError, match="stride"):
        OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=4).update(0, _blob, stride=0)
