"""A trained field as a distillation teacher (KiloNeRF's recipe, for any student field).

Targets (KiloNeRF's distillation, arXiv:2103.13744): at points x and uniformly random unit directions d,
``rgb_t = teacher rgb`` and ``alpha_t = 1 - exp(-sigma_t * delta)``, with delta the student's
render step size (the interval the student's alphas are composited with). Loss: MSE over the
four channels [rgb, alpha] of the student against the teacher. Half of each batch is uniform
in the scene box and half uniform inside occupied cells of the occupancy grid, which is first
filled from the teacher's density (every cell, one jittered point each).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from fieldforge.apps.training.methods.registry import field_methods
from fieldforge.errors import FieldforgeError
from fieldforge.fields.base import Field
from fieldforge.render.occupancy import OccupancyGrid


def load_teacher(run: str | Path, device: torch.device) -> tuple[Field, OccupancyGrid]:
    """The field of a trained field run (in eval mode) and its occupancy grid, loaded once (by the
    training layer, which hands the field to the student; :class:`Teacher` freezes it). One-line
    errors for a missing run or checkpoint, an unknown method, or a run that is not a field (e.g. Gaussian splats)."""
    from fieldforge.apps.training.run import load_run

    try:
        method, _, _ = load_run(run, device)
    except FieldforgeError as e:
        raise FieldforgeError(f"teacher {run}: {e}") from None
    field = method.radiance_field
    if field is None:
        raise FieldforgeError(f"teacher {run}: a {method.name!r} run has no field to distil from; "
                              f"use the run of a field method ({', '.join(field_methods())})")
    return field, method.estimator


def occupied_bounds(grid: OccupancyGrid) -> list[float]:
    """Box [xmin, ymin, zmin, xmax, ymax, zmax] of the occupied level-0 cells of ``grid``, grown
    by one cell, clipped to the grid (the whole grid if nothing is occupied)."""
    occ, box = grid.binaries[0], grid.aabbs[0].float().cpu()
    r = occ.shape[0]
    ijk = torch.nonzero(occ).cpu()
    if len(ijk) == 0:
        return box.tolist()
    lo = (ijk.amin(0) - 1).clamp_min(0).float() / r
    hi = (ijk.amax(0) + 2).clamp_max(r).float() / r
    size = box[3:] - box[:3]
    return torch.cat([box[:3] + lo * size, box[:3] + hi * size]).tolist()


class Teacher:
    """Distillation targets from a frozen field."""

    def __init__(self, field: Field):
        self.field = field.eval().requires_grad_(False)

    @torch.no_grad()
    def init_occupancy(self, grid: OccupancyGrid, step_size: float, occ_thre: float) -> None:
        """Fill ``grid`` from the teacher's density (all cells), as a fresh grid's warm-up does."""
        grid.update(0, lambda x: self.field.density(x) * step_size, occ_thre=occ_thre, warmup_steps=1)

    def points(self, grid: OccupancyGrid, aabb: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """[n, 3] world points: n/2 uniform in ``aabb``, the rest uniform in occupied grid cells."""
        dev = aabb.device
        n_occ = n // 2
        uniform = aabb[0] + torch.rand(n - n_occ, 3, generator=generator, device=dev) * (aabb[1] - aabb[0])
        occupied = torch.nonzero(grid.binaries[0].reshape(-1))[:, 0]
        if len(occupied) == 0:
            return torch.cat([uniform, aabb[0] + torch.rand(n_occ, 3, generator=generator, device=dev)
                              * (aabb[1] - aabb[0])])
        cells = occupied[torch.randint(len(occupied), (n_occ,), generator=generator, device=dev)]
        r = grid.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).float()
        u = (ijk + torch.rand(n_occ, 3, generator=generator, device=dev)) / r
        box = grid.aabbs[0]
        return torch.cat([uniform, box[:3] + u * (box[3:] - box[:3])])

    def loss(self, student: Field, grid: OccupancyGrid, n: int, step_size: float,
             generator: torch.Generator) -> Tensor:
        """MSE of the student's [rgb, alpha] against the teacher's at ``n`` points."""
        x = self.points(grid, student.aabb, n, generator)
        d = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator, device=x.device), dim=-1)
        with torch.no_grad():
            t = self.field(x, d)
            target = torch.cat([t["rgb"], 1 - torch.exp(-t["density"] * step_size)], -1)
        s = student(x, d)
        pred = torch.cat([s["rgb"], 1 - torch.exp(-s["density"] * step_size)], -1)
        return torch.mean((pred - target) ** 2)
