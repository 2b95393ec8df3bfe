"""A radiance field that is continuous piecewise linear in position, so it renders exactly.

density = relu(h_0) and rgb = clamp(h_1..3, 0, 1), where h = MLP(normalize(x)) is a (leaky)
ReLU MLP of the position normalised to [0, 1]^3 inside ``aabb`` (optionally hat-encoded).
Colour is view-independent: it must be a function of position alone for exact compositing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.fields.base import Field
from fieldforge.fields.piecewise.layers import PLMLP


class PLField(Field):
    def __init__(self, aabb: Tensor, width: int = 32, depth: int = 2, hat_bins: int = 0, negative_slope: float = 0.0):
        super().__init__(aabb)
        self.mlp = PLMLP.make(3, 4, width=width, depth=depth, negative_slope=negative_slope, hat_bins=hat_bins)

    def _raw(self, x: Tensor) -> Tensor:
        return self.mlp(self.normalize(x))

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return torch.relu(self._raw(x)[..., :1])

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        h = self._raw(x)
        return {"density": torch.relu(h[..., :1]), "rgb": h[..., 1:].clamp(0, 1)}

    def as_piecewise_linear(self) -> nn.Sequential:
        """World position -> [density, r, g, b] as Linear/ReLU modules sharing the MLP's weights
        (clamp(h, 0, 1) = relu(h) - relu(h - 1))."""
        lo, hi = self.aabb[0], self.aabb[1]
        kw = {"dtype": self.aabb.dtype, "device": self.aabb.device}
        norm = nn.Linear(3, 3, **kw).requires_grad_(False)
        norm.weight.copy_(torch.diag(1 / (hi - lo)))
        norm.bias.copy_(-lo / (hi - lo))
        expand = nn.Linear(4, 7, **kw).requires_grad_(False)
        expand.weight.copy_(torch.cat([torch.eye(4), torch.eye(4)[1:]]))
        expand.bias.copy_(torch.tensor([0.0, 0, 0, 0, -1, -1, -1]))
        fold = nn.Linear(7, 4, bias=False, **kw).requires_grad_(False)
        fold.weight.copy_(torch.cat([torch.eye(4), -torch.eye(4)[:, 1:]], 1))
        return nn.Sequential(norm, self.mlp.net, expand, nn.ReLU(), fold)
