"""Gaussians for dynamic scenes (GauFRe, arXiv:2312.11458): one cloud with a fixed,
non-learned per-Gaussian ``dynamic`` flag and a deformation MLP.

Dynamic Gaussians (flag True) live in canonical space and are warped to time t in [0, 1] by
:class:`~fieldforge.fields.deformation.DeformationMLP`; static ones (flag False) keep their
canonical parameters at every time. Both are rendered by one rasterizer call. The flag is the
explicit form of the reference's misleadingly named ``_isstatic`` (1 = dynamic there); it is
listed in ``PER_GAUSSIAN``, so densification copies it to clones and split children.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fieldforge.fields.deformation import DeformationMLP
from fieldforge.fields.gaussians import GaussianModel


class DynamicGaussianModel(GaussianModel):
    PER_GAUSSIAN = ("dynamic",)

    def __init__(self, n: int = 0, sh_degree: int = 3, deformation: DeformationMLP | None = None):
        super().__init__(n, sh_degree)
        self.register_buffer("dynamic", torch.zeros(n, dtype=torch.bool))
        self.deformation = deformation if deformation is not None else DeformationMLP()

    @classmethod
    def from_clouds(cls, static: GaussianModel, dynamic: GaussianModel,
                    deformation: DeformationMLP) -> "DynamicGaussianModel":
        """Concatenate a static and a dynamic cloud (each initialised on its own, so their
        nearest-neighbour scales are computed separately, as in the reference)."""
        model = cls(0, static.sh_degree, deformation)
        model.set_params({k: torch.cat([static.params()[k], dynamic.params()[k]]) for k in static.params()})
        model.dynamic = torch.cat([torch.zeros(len(static), dtype=torch.bool), torch.ones(len(dynamic), dtype=torch.bool)])
        return model

    def resize(self, n: int) -> None:
        super().resize(n)
        self.dynamic = torch.zeros(n, dtype=torch.bool, device=self.means.device)

    def geometry(self, t: float | None) -> tuple[Tensor, Tensor, Tensor]:
        """(means, log-scales, quats) at time ``t``; ``t=None``: the canonical Gaussians
        (the warm-up renders every Gaussian undeformed)."""
        if t is None:
            return self.means, self.scales, self.quats
        return self.deformation.deform(self.means, self.scales, self.quats, t, self.dynamic)
