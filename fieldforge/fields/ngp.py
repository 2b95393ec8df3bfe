"""NGP-style radiance field: multiresolution hash grid + tiny MLPs (Instant-NGP / nerfacc).

Points are normalised to [0, 1]^3 by the field's ``aabb``; points outside get zero density. With
``unbounded``, the box is the foreground of an unbounded scene: points are mapped to [-1, 1]^3 by
the box, contracted (:func:`fieldforge.fields.contraction.contract`) into [-2, 2]^3 and the hash
grid covers that, so every point of space has a density.
density = trunc_exp(first output of the density MLP); colour = sigmoid(colour MLP of the
remaining geometric features and the SH encoding (4 bands, 16 values) of the unit view
direction).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fieldforge.encoders.hashgrid import HashGrid
from fieldforge.encoders.sh import SHEncoding
from fieldforge.fields.base import Field
from fieldforge.fields.contraction import contract
from fieldforge.fields.mlp import MLP, trunc_exp


class NGPField(Field):
    splits_appearance = True
    reuses_encoding = True

    def __init__(self, aabb: Tensor, n_levels: int = 16, n_features: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048, geo_features: int = 15,
                 hidden: int = 64, color_layers: int = 2, sh_bands: int = 4, unbounded: bool = False):
        super().__init__(aabb)
        self.unbounded = unbounded
        self.grid = HashGrid(in_dim=3, n_levels=n_levels, n_features=n_features,
                             log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                             max_resolution=max_resolution)
        self.density_mlp = MLP(self.grid.out_dim, hidden, 1, 1 + geo_features)
        self.dir_enc = SHEncoding(sh_bands)
        self.color_mlp = MLP(geo_features + self.dir_enc.out_dim, hidden, color_layers, 3)

    def _grid_input(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The hash grid's coordinates in [0, 1]^3 of world points, and (bounded) which lie in the box."""
        xn = self.normalize(x)
        if self.unbounded:
            return (contract(2.0 * xn - 1.0) + 2.0) / 4.0, None
        return xn.clamp(0, 1), ((xn >= 0) & (xn <= 1)).all(-1, keepdim=True)

    def encode(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self.grid(self._grid_input(x)[0])

    def geometry(self, x: Tensor, t: Tensor | None = None, encoding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        g, inside = self._grid_input(x)
        h = self.density_mlp(self.grid(g, known=encoding))
        density = trunc_exp(h[..., :1] - 1.0)
        return (density if inside is None else density * inside), h[..., 1:]

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self.geometry(x)[0]

    def appearance(self, features: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        return {"rgb": torch.sigmoid(self.color_mlp(torch.cat([features, self.dir_enc(d)], -1)))}

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        density, geo = self.geometry(x)
        return {"density": density, **self.appearance(geo, d)}
