"""Occupancy-grid estimator with nerfacc's ``OccGridEstimator`` semantics, in pure PyTorch.

The grid covers ``roi_aabb`` at level 0 and ``2**l`` times that box (about its centre) at
level l. Cells are indexed x slowest, z fastest. ``occs`` holds a decayed max of
``occ_eval_fn(x)`` (density * step size); ``binaries = occs > min(mean(occs), occ_thre)``.

Sampling places intervals of length ``render_step_size`` on a lattice anchored at the
per-ray near plane (plus one jitter per ray when stratified); a sample is kept when its
midpoint lies inside the grid, before ``far`` and in an occupied cell. Empty space is skipped
coarse to fine (single-level grids): runs of ``COARSE`` lattice steps are first tested against
the binary grid dilated by the run's half length (conservative, so the kept samples are exactly
those of the fine test alone), and only runs that may hold an occupied sample are refined. This is the CPU
equivalent of nerfacc's ``traverse_grids`` for ``cone_angle = 0``; samples of one ray are
contiguous, front to back (packed format, see :mod:`fieldforge.render.volume`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from fieldforge import kernels
from fieldforge.render.volume import render_visibility_from_density
from fieldforge.scenes.rays import Rays

if TYPE_CHECKING:
    from fieldforge.kernels.march import Lattice


def ray_aabb_intersect(origins: Tensor, directions: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test. Returns t_entry, t_exit [R] and a hit mask (t_exit > max(t_entry, 0))."""
    inv = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (aabb[:3] - origins) * inv
    t1 = (aabb[3:] - origins) * inv
    t_entry = torch.minimum(t0, t1).amax(-1)
    t_exit = torch.maximum(t0, t1).amin(-1)
    hit = t_exit > t_entry.clamp_min(0)
    return t_entry, t_exit, hit


COARSE = 8  # lattice steps per coarse run of the empty-space skip


def _expand(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Segment index and rank within its segment of every item of segments of ``counts`` items."""
    total = int(counts.sum())
    seg = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts, output_size=total)
    return seg, torch.arange(total, device=counts.device) - (torch.cumsum(counts, 0) - counts)[seg]


class OccupancyGrid(nn.Module):
    """Multi-level binary occupancy grid over an axis-aligned box (nerfacc semantics)."""

    def __init__(self, roi_aabb: Tensor | list[float], resolution: int = 128, levels: int = 1):
        super().__init__()
        if resolution < 1 or levels < 1:
            raise ValueError(f"OccupancyGrid needs resolution >= 1 and levels >= 1, got {resolution}, {levels}")
        roi = torch.as_tensor(roi_aabb, dtype=torch.float32).reshape(6)
        center, extent = (roi[:3] + roi[3:]) / 2, (roi[3:] - roi[:3]) / 2
        aabbs = torch.stack([torch.cat([center - extent * 2**i, center + extent * 2**i]) for i in range(levels)])
        self.resolution = resolution
        self.levels = levels
        self.coarse_skip = True  # False: test every lattice step (same samples, slower; for tests)
        self.cells_per_lvl = resolution**3
        self.register_buffer("aabbs", aabbs)
        self.register_buffer("occs", torch.zeros(levels * self.cells_per_lvl))
        self.register_buffer("binaries", torch.zeros(levels, resolution, resolution, resolution, dtype=torch.bool))
        r = torch.arange(resolution)
        coords = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        self.register_buffer("grid_coords", coords, persistent=False)
        self.register_buffer("grid_indices", torch.arange(self.cells_per_lvl), persistent=False)

    # ----------------------------------------------------------------------------- update
    @torch.no_grad()
    def _all_cells(self, stride: int = 1, phase: int = 0) -> list[Tensor]:
        """Per level, the cells a warm-up update evaluates: every cell (``stride`` 1), else the
        sub-lattice of cells whose coordinates equal an offset modulo ``stride`` on every axis, the
        offset being the base-``stride`` digits (x first) of ``phase mod stride**3``; so
        ``stride**3`` consecutive phases visit every cell exactly once. Masked cells (occs < 0) are skipped."""
        cells = self.grid_indices
        if stride > 1:
            p = phase % stride**3
            offset = torch.tensor([p // stride**2, p // stride % stride, p % stride], device=cells.device)
            cells = cells[(self.grid_coords % stride == offset).all(-1)]
        out = []
        for lvl in range(self.levels):
            out.append(cells[self.occs[lvl * self.cells_per_lvl + cells] >= 0.0])
        return out

    @torch.no_grad()
    def _uniform_and_occupied_cells(self, n: int) -> list[Tensor]:
        out = []
        for lvl in range(self.levels):
            uniform = torch.randint(self.cells_per_lvl, (n,), device=self.occs.device)
            uniform = uniform[self.occs[lvl * self.cells_per_lvl + uniform] >= 0.0]
            occupied = torch.nonzero(self.binaries[lvl].flatten())[:, 0]
            if n < len(occupied):
                occupied = occupied[torch.randint(len(occupied), (n,), device=self.occs.device)]
            out.append(torch.cat([uniform, occupied]))
        return out

    @torch.no_grad()
    def update(self, step: int, occ_eval_fn: Callable[[Tensor], Tensor], occ_thre: float = 1e-2,
               ema_decay: float = 0.95, warmup_steps: int = 256, chunk: int = 2**18, stride: int = 1,
               phase: int = 0) -> None:
        """One update (nerfacc ``_update`` when ``stride`` is 1): all cells during warm-up, else
        res^3/4 random cells plus up to as many occupied ones; one jittered point per cell;
        ``occs = max(occs * ema_decay, occ)``; re-binarise.

        ``stride`` s > 1 evaluates 1/s^3 of those cells per update, at the same decay per unit of
        time: in warm-up the sub-lattice ``phase`` of :meth:`_all_cells` (a uniform coverage of the
        box at 1/s the resolution, every cell once in s^3 consecutive phases), after it res^3/(4 s^3)
        random cells plus up to as many occupied ones; the decay applied at a visit is
        ``ema_decay ** (s^3)``, since each cell is visited s^3 times less often.
        """
        if stride < 1:
            raise ValueError(f"OccupancyGrid.update: stride must be >= 1, got {stride}")
        parts = stride**3
        ema_decay = ema_decay**parts
        cells = self._all_cells(stride, phase) if step < warmup_steps \
            else self._uniform_and_occupied_cells(self.cells_per_lvl // (4 * parts))
        for lvl, idx in enumerate(cells):
            gc = self.grid_coords[idx]
            x = (gc + torch.rand_like(gc, dtype=torch.float32)) / self.resolution
            x = self.aabbs[lvl, :3] + x * (self.aabbs[lvl, 3:] - self.aabbs[lvl, :3])
            occ = torch.cat([occ_eval_fn(x[i:i + chunk]).reshape(-1) for i in range(0, len(x), chunk)]) \
                if len(x) else x.new_zeros(0)
            ids = lvl * self.cells_per_lvl + idx
            self.occs[ids] = torch.maximum(self.occs[ids] * ema_decay, occ)
        thre = torch.clamp(self.occs[self.occs >= 0].mean(), max=occ_thre)
        self.binaries = (self.occs > thre).view(self.binaries.shape)

    @torch.no_grad()
    def update_every_n_steps(self, step: int, occ_eval_fn: Callable[[Tensor], Tensor], occ_thre: float = 1e-2,
                             ema_decay: float = 0.95, warmup_steps: int = 256, n: int = 16, stride: int = 1) -> None:
        """:meth:`update` at every ``n``-th step. With ``stride`` > 1, the first update (step 0)
        evaluates every cell, so that the grid starts complete, and update number ``step // n``
        then evaluates warm-up phase ``step // n`` (every cell once in ``stride**3`` updates)."""
        if step % n == 0:
            self.update(step, occ_eval_fn, occ_thre, ema_decay, warmup_steps, stride=stride if step else 1,
                        phase=step // n)

    # ----------------------------------------------------------------------------- lookup
    def occupied(self, x: Tensor) -> Tensor:
        """Binary occupancy [N] at world points, from the finest level that contains each."""
        roi = self.aabbs[0]
        xn = (x - roi[:3]) / (roi[3:] - roi[:3])
        maxval = (xn - 0.5).abs().amax(-1).clamp_min(0.1)
        mip = (torch.frexp(maxval)[1].long() + 1).clamp_min(0)
        inside = mip < self.levels
        mip = mip.clamp_max(self.levels - 1)
        scale = torch.exp2(mip.float())[:, None]
        xl = (xn - 0.5) / scale + 0.5
        cell = (xl * self.resolution).long().clamp(0, self.resolution - 1)
        flat = ((mip * self.resolution + cell[:, 0]) * self.resolution + cell[:, 1]) * self.resolution + cell[:, 2]
        return self.binaries.reshape(-1)[flat] & inside

    def _dilated(self, radius: float) -> Tensor:
        """Level-0 binaries dilated by ``radius`` world units per axis (cached per grid state)."""
        key = (id(self.binaries), self.binaries._version, radius)
        if getattr(self, "_dilated_key", None) != key:
            box = self.aabbs[0]
            cell = (box[3:] - box[:3]) / self.resolution
            r = [int(v) for v in torch.ceil(radius / cell).tolist()]
            occ = self.binaries[0].float()[None, None]
            dil = torch.nn.functional.max_pool3d(occ, [2 * v + 1 for v in r], stride=1, padding=r)
            self._dilated_grid, self._dilated_key = dil[0, 0] > 0, key
        return self._dilated_grid

    def _lookup(self, grid: Tensor, x: Tensor) -> Tensor:
        """Level-0 ``grid`` value at the cell of each point, points clamped into the box."""
        box = self.aabbs[0]
        cell = ((x - box[:3]) / (box[3:] - box[:3]) * self.resolution).long().clamp(0, self.resolution - 1)
        return grid.reshape(-1)[(cell[:, 0] * self.resolution + cell[:, 1]) * self.resolution + cell[:, 2]]

    def _coarse_runs(self, o: Tensor, d: Tensor, near_p: Tensor, k0: Tensor, counts: Tensor,
                     dt: float) -> tuple[Tensor, Tensor]:
        """Per ray, the fine lattice split into runs of ``COARSE`` steps; drop runs whose fine
        midpoints are all provably empty. Returns (ray index, lattice index k) of every fine sample kept."""
        ray, j = _expand((counts + COARSE - 1) // COARSE)
        first = k0[ray] + j * COARSE
        length = torch.clamp(counts[ray] - j * COARSE, max=COARSE)
        # fine midpoints of a run lie within (length - 1) / 2 steps of the run's centre
        centre = near_p[ray] + (first + length / 2.0) * dt
        keep = self._lookup(self._dilated((COARSE - 1) / 2 * dt), o[ray] + centre[:, None] * d[ray])
        ray, first, length = ray[keep], first[keep], length[keep].long()
        run, i = _expand(length)
        return ray[run], first[run] + i

    def _reference_samples(self, o: Tensor, d: Tensor, near_p: Tensor, k0: Tensor, counts: Tensor,
                           dt: float) -> tuple[Tensor, Tensor]:
        """(ray index, t_start) of the lattice samples ``near_p + k dt``, k in [k0, k0 + counts), whose
        midpoint is occupied (the reference of :class:`fieldforge.kernels.march.Lattice`)."""
        if self.levels == 1 and self.coarse_skip:
            ray_idx, k = self._coarse_runs(o, d, near_p, k0, counts, dt)
        else:
            ray_idx, i = _expand(counts)
            k = i.float() + k0[ray_idx]
        t_starts = near_p[ray_idx] + k * dt
        t_mid = t_starts + 0.5 * dt
        x = o[ray_idx] + t_mid[:, None] * d[ray_idx]
        keep = self.occupied(x)
        return ray_idx[keep], t_starts[keep]

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def lattice(self, rays: Rays, near: float = 0.0, far: float = 1e10, render_step_size: float = 5e-3,
                stratified: bool = False, generator: torch.Generator | None = None) -> PackedLattice | Lattice:
        """The occupied samples of ``rays`` (those :meth:`sample` keeps before pruning), to be walked
        at once (``.all()``: packed ray_indices, t_starts) or a few per ray at a time
        (``.advance(rays, limit)``): :class:`fieldforge.kernels.march.Lattice` for float32 CPU rays,
        else its reference :class:`PackedLattice`."""
        o, d = rays.origins, rays.directions
        n_rays = o.shape[0]
        dt = render_step_size
        t_entry, t_exit, hit = ray_aabb_intersect(o, d, self.aabbs[-1])
        near_p = torch.full((n_rays,), float(near), device=o.device)
        if stratified:
            near_p = near_p + torch.rand(n_rays, device=o.device, generator=generator) * dt
        t_hi = torch.minimum(t_exit, torch.full_like(t_exit, float(far)))
        # lattice k: interval [near + k dt, near + (k+1) dt], midpoint in [max(entry, near), t_hi)
        lo = torch.maximum(t_entry, near_p)
        k0 = torch.ceil((lo - near_p) / dt - 0.5).clamp_min(0)
        k1 = torch.ceil((t_hi - near_p) / dt - 0.5)  # exclusive
        counts = torch.where(hit, (k1 - k0).clamp_min(0), torch.zeros_like(k0)).long()
        if o.dtype == d.dtype == torch.float32 and kernels.enabled(o, d, self.binaries):
            try:
                from fieldforge.kernels.march import Lattice

                return Lattice(self.binaries, self.aabbs[0], o, d, near_p, k0, counts, dt)
            except kernels.Unavailable:
                pass
        return PackedLattice(*self._reference_samples(o, d, near_p, k0, counts, dt), n_rays)

    @torch.no_grad()
    def sample(
        self, rays: Rays, sigma_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
        near: float = 0.0, far: float = 1e10, render_step_size: float = 5e-3,
        early_stop_eps: float = 1e-4, alpha_thre: float = 0.0, stratified: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Packed samples (ray_indices, t_starts, t_ends) for ``rays`` with unit directions.

        ``sigma_fn(t_starts, t_ends, ray_indices) -> sigmas [S]``, if given, prunes samples
        behind early termination (T < early_stop_eps) or below ``alpha_thre`` (clamped to
        the mean occupancy, as in nerfacc), evaluated without gradients.
        """
        ray_idx, t_starts = self.lattice(rays, near, far, render_step_size, stratified, generator).all()
        t_ends = t_starts + render_step_size
        if sigma_fn is not None and (early_stop_eps > 0 or alpha_thre > 0) and len(ray_idx):
            alpha_thre = min(alpha_thre, float(self.occs.mean()))
            sig = sigma_fn(t_starts, t_ends, ray_idx).reshape(-1)
            vis = render_visibility_from_density(t_starts, t_ends, sig, ray_idx, len(rays), early_stop_eps,
                                                 alpha_thre)
            ray_idx, t_starts, t_ends = ray_idx[vis], t_starts[vis], t_ends[vis]
        return ray_idx, t_starts, t_ends


class PackedLattice:
    """Packed per-sample values (``ray_indices`` non-decreasing) walked with a cursor per ray. With
    the occupied samples' t_starts as values it is the reference of
    :class:`fieldforge.kernels.march.Lattice` (same interface, same samples)."""

    def __init__(self, ray_indices: Tensor, values: Tensor, n_rays: int):
        self.ray_indices, self.values = ray_indices, values
        self.counts = torch.bincount(ray_indices, minlength=n_rays)
        self.first = torch.cumsum(self.counts, 0) - self.counts
        self.cursor = torch.zeros_like(self.counts)

    def all(self) -> tuple[Tensor, Tensor]:
        return self.ray_indices, self.values

    def advance(self, rays: Tensor, limit: int) -> tuple[Tensor, Tensor]:
        """Values [A, limit] of the next at most ``limit`` samples of each of ``rays`` (zeros past
        the last) and their number [A]; the rays' cursors move past them."""
        n = torch.clamp(self.counts[rays] - self.cursor[rays], max=limit)
        valid = torch.arange(limit, device=rays.device) < n[:, None]
        out = self.values.new_zeros(len(rays), limit)
        out[valid] = self.values[((self.first[rays] + self.cursor[rays])[:, None] + valid.cumsum(1) - 1)[valid]]
        self.cursor[rays] += n
        return out, n
