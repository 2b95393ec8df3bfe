"""MLP NeRF: frequency-encoded positions and directions into a ReLU MLP (Mildenhall et al.).

Positions are normalised to [-1, 1]^3 by the field's ``aabb`` before the frequency encoding;
density = relu(sigma head) (softplus optional); colour = sigmoid of a one-layer head on the
features and the encoded unit view direction. Points outside the aabb get zero density.

``activation="sine"`` swaps the frequency-encoded ReLU trunk for a SIREN trunk
(:class:`~fieldforge.encoders.siren.Siren`, sine activations with frequency ``omega_0``) on the
raw [-1, 1]^3 coordinates; ``pos_freqs`` is then unused. This is the field-side SIREN that
FreSh tunes through ``omega_0``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.encoders.frequency import FrequencyEncoding
from fieldforge.encoders.siren import Siren
from fieldforge.fields.base import Field
from fieldforge.fields.mlp import MLP


class NeRFField(Field):
    def __init__(self, aabb: Tensor, width: int = 128, depth: int = 4, pos_freqs: int = 10, dir_freqs: int = 4,
                 skips: tuple[int, ...] = (), density_activation: str = "softplus", activation: str = "relu",
                 omega_0: float = 30.0):
        super().__init__(aabb)
        if density_activation not in ("relu", "softplus"):
            raise ValueError(f"density_activation must be relu or softplus, got {density_activation!r}")
        if activation not in ("relu", "sine"):
            raise ValueError(f"activation must be relu or sine, got {activation!r}")
        self.dir_enc = FrequencyEncoding(3, dir_freqs)
        if activation == "sine":
            self.pos_enc = nn.Identity()
            self.trunk = Siren(3, width, width, max(depth - 1, 1), omega_0=omega_0)
        else:
            self.pos_enc = FrequencyEncoding(3, pos_freqs)
            self.trunk = MLP(self.pos_enc.out_dim, width, depth - 1, width, skips)
        self.sigma = nn.Linear(width, 1)
        self.color = MLP(width + self.dir_enc.out_dim, width // 2, 1, 3)
        self.density_activation = density_activation

    def _trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xn = self.normalize(x)
        inside = ((xn >= 0) & (xn <= 1)).all(-1, keepdim=True)
        h = torch.relu(self.trunk(self.pos_enc(xn * 2 - 1)))
        raw = self.sigma(h)
        act = torch.relu(raw) if self.density_activation == "relu" else nn.functional.softplus(raw - 1.0)
        return act * inside, h

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self._trunk(x)[0]

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        density, h = self._trunk(x)
        rgb = torch.sigmoid(self.color(torch.cat([h, self.dir_enc(d)], -1)))
        return {"density": density, "rgb": rgb}
