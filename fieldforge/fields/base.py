"""The Field contract: what the ray marcher, exporters and viewer may ask of a field.

A field maps world-space points ``x`` [..., 3] (same units as the scene's bounds), unit view
directions ``d`` [..., 3] (camera -> sample) and an optional time ``t`` [..., 1] in [0, 1] to
named channels. ``density`` is volume density sigma >= 0 in 1/world-units; ``rgb`` is linear
colour in [0, 1]. Extra named channels (e.g. "normals", "semantics") are returned in the same
dict and listed in ``channels``. Fields never see rays or cameras.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Field(nn.Module):
    """Base class. Subclasses implement :meth:`density` and :meth:`forward`."""

    #: names of the extra channels ``forward`` returns besides density and rgb
    channels: tuple[str, ...] = ()

    def __init__(self, aabb: Tensor):
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())

    def normalize(self, x: Tensor) -> Tensor:
        """World points -> [0, 1]^3 inside ``aabb`` (points outside map outside [0, 1])."""
        return (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:  # [..., 1]
        raise NotImplementedError

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError
