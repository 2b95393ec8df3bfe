"""Time-conditioned MLP NeRF with optional ResField layers (T-NeRF / ResFields, arXiv:2309.03160).

Positions are normalised to [-1, 1]^3 by ``aabb``; time t in [0, 1] (the Field contract) enters
twice, as in the reference: frequency-encoded (mapped to [-1, 1], ``time_freqs`` frequencies)
next to the encoded position at the trunk's input, and through the ResField layers' weight
residuals dW(t). The trunk has ``depth`` ReLU layers of ``width``; with ``rank`` > 0 every layer
but the first is a :class:`~fieldforge.fields.resfields.ResFieldLinear` with ``capacity`` time
knots (interpolation over [0, 1]); ``rank=0`` is the plain time-conditioned MLP (the equal-
parameter baseline is the same field, wider). Heads as :class:`~fieldforge.fields.nerf.NeRFField`:
density = softplus(raw - 1), zero outside the aabb; colour = sigmoid of a one-layer head on the
features and the encoded view direction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.encoders.frequency import FrequencyEncoding
from fieldforge.fields.base import Field
from fieldforge.fields.mlp import MLP
from fieldforge.fields.resfields import ResFieldLinear


class DynamicNeRFField(Field):
    def __init__(self, aabb: Tensor, width: int = 128, depth: int = 4, pos_freqs: int = 10, dir_freqs: int = 4,
                 time_freqs: int = 6, capacity: int = 1, rank: int = 10):
        super().__init__(aabb)
        if depth < 2:
            raise ValueError(f"DynamicNeRFField: depth must be >= 2 (a layer after the first), got {depth}")
        self.pos_enc = FrequencyEncoding(3, pos_freqs)
        self.time_enc = FrequencyEncoding(1, time_freqs)
        self.dir_enc = FrequencyEncoding(3, dir_freqs)
        layers: list[nn.Module] = [nn.Linear(self.pos_enc.out_dim + self.time_enc.out_dim, width)]
        for _ in range(depth - 1):
            layers.append(ResFieldLinear(width, width, capacity, rank) if rank > 0 else nn.Linear(width, width))
        self.trunk = nn.ModuleList(layers)
        self.sigma = nn.Linear(width, 1)
        self.color = MLP(width + self.dir_enc.out_dim, width // 2, 1, 3)

    def _trunk(self, x: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        if t is None:
            raise ValueError("DynamicNeRFField: density and forward need times t [..., 1] in [0, 1]")
        xn = self.normalize(x)
        inside = ((xn >= 0) & (xn <= 1)).all(-1, keepdim=True)
        t = t.reshape(*x.shape[:-1], 1).to(x.dtype)
        h = torch.cat([self.pos_enc(xn * 2 - 1), self.time_enc(t * 2 - 1)], -1)
        for layer in self.trunk:
            h = torch.relu(layer(h, t) if isinstance(layer, ResFieldLinear) else layer(h))
        return nn.functional.softplus(self.sigma(h) - 1.0) * inside, h

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self._trunk(x, t)[0]

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        density, h = self._trunk(x, t)
        rgb = torch.sigmoid(self.color(torch.cat([h, self.dir_enc(d)], -1)))
        return {"density": density, "rgb": rgb}
