"""``kilonerf``: a grid of tiny MLPs, distilled from a teacher field and fine-tuned on the images.

Network grid: over ``bounds``; with a teacher and no bounds given, ``train`` sets them to the
box of the teacher's occupied cells (plus one cell), so no networks are spent on empty space
(the reference reads a per-scene bbox.txt for the same purpose).

Training (KiloNeRF, arXiv:2103.13744): with ``--teacher RUN`` the first ``distill_steps`` steps
regress the teacher's colour and alpha, the occupancy grid is filled from the teacher's
density; then image fine-tuning with the loss MSE + ``l2_view`` * sum of the (non-squared)
L2 norms of the direction and colour layers' weight and bias tensors. Without a teacher it
trains from the images alone. Rendering uses the shared ray marcher: occupancy grid (finer
than the network grid) for empty-space skipping, early termination at low transmittance.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from fieldforge.apps.training.methods.radiance import RadianceConfig, RadianceMethod
from fieldforge.errors import FieldforgeError
from fieldforge.fields.base import Field


@dataclasses.dataclass
class KiloNeRFConfig(RadianceConfig):
    steps: int = 3000
    lr: float = 5e-3
    cells: int = 16  # networks on the longest axis of the scene box
    width: int = 32
    layers: int = 2
    block: int = 64  # points per batched-matmul block (one network per block)
    l2_view: float = 1e-6
    grid_resolution: int = 128  # occupancy cells per axis (8x the network grid on the longest axis)
    target_samples: int = 2**16
    early_stop_eps: float = 1e-2  # stop rays at transmittance 0.01 (the reference's fast renderer)
    bounds: tuple[float, ...] = ()  # xmin ymin zmin xmax ymax zmax of the network grid; () = the scene's


class KiloNeRFMethod(RadianceMethod):
    name = "kilonerf"
    Config = KiloNeRFConfig

    def make_field(self, aabb: Tensor) -> Field:
        from fieldforge.fields.kilonerf import KiloNeRFField

        c = self.config
        return KiloNeRFField(aabb, cells=c.cells, width=c.width, layers=c.layers, block=c.block)

    @classmethod
    def with_teacher(cls, config: KiloNeRFConfig, run: str, occupied: list[float]) -> KiloNeRFConfig:
        """Also, without bounds given, the network grid spans the teacher's occupied box."""
        config = dataclasses.replace(config, teacher=run)
        return config if config.bounds else dataclasses.replace(config, bounds=tuple(round(v, 4) for v in occupied))

    def field_bounds(self, scene_bounds: Tensor) -> Tensor:
        b = self.config.bounds
        if not b:
            return scene_bounds
        if len(b) != 6 or any(b[i] >= b[i + 3] for i in range(3)):
            raise FieldforgeError(f"kilonerf: bounds must be xmin,ymin,zmin,xmax,ymax,zmax with min < max, got {b}")
        return torch.tensor(b, dtype=torch.float32).reshape(2, 3)

    def regularizer(self) -> Tensor | None:
        if self.config.l2_view <= 0:
            return None
        return self.config.l2_view * sum(torch.linalg.vector_norm(p) for p in self.field.view_dependent_parameters())
