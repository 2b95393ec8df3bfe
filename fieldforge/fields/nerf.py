"""MLP NeRF: frequency-encoded positions and directions into a ReLU MLP (Mildenhall et al.).

Positions are normalised to [-1, 1]^3 by the field's ``aabb`` before the frequency encoding;
density = relu(sigma head) (softplus optional); colour = sigmoid of a one-layer head on the
features and the encoded unit view direction. Points outside the aabb get zero density.

``activation="sine"`` swaps the frequency-encoded ReLU trunk for a SIREN trunk
(:class:`~fieldforge.encoders.siren.Siren`, sine activations with frequency ``omega_0``) on the
raw [-1, 1]^3 coordinates; ``pos_freqs`` is then unused. This is the field-side SIREN that
FreSh tunes through ``omega_0``.

``cam=True`` (ReLU trunk only) adds CAM (:mod:`fieldforge.fields.cam`, scalar gamma/beta grids,
gamma = 1 and beta = 0 at init, so a fresh field equals the ``cam=False`` field with the same
weights when ``cam_norm="none"``). ``cam_coord`` picks what the grid is over:

- ``"viewdir"`` (default): a (azimuth, elevation) grid, 10 x 3 by default, modulates the hidden
  layer of the colour branch only. The Mip-NeRF reference modulates the density trunk by the
  view direction instead, which makes density view-dependent; here ``density(x, t)`` has no
  direction (occupancy-grid marching queries it without one), so the modulation stays in the
  branch that already sees ``d`` and ``density()`` equals ``forward()["density"]``.
- ``"time"``: a 5-knot grid over 2t - 1 modulates every trunk layer (the spec's T-NeRF variant,
  without its deformation MLP); ``density`` and ``forward`` then require ``t``.

``cam_norm="per_sample"`` puts a no-affine layer norm over each sample's channels before the
modulation (not the reference Mip-NeRF's per-ray group norm).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.encoders.frequency import FrequencyEncoding
from fieldforge.encoders.siren import Siren
from fieldforge.fields.base import Field
from fieldforge.fields.cam import CAMMLP, viewdir_coords
from fieldforge.fields.mlp import MLP

#: default CAM grid knots per ``cam_coord``: 10 azimuth x 3 elevation (Mip-NeRF), 5 times (T-NeRF)
CAM_RESOLUTION = {"viewdir": (10, 3), "time": (5,)}


class NeRFField(Field):
    def __init__(self, aabb: Tensor, width: int = 128, depth: int = 4, pos_freqs: int = 10, dir_freqs: int = 4,
                 skips: tuple[int, ...] = (), density_activation: str = "softplus", activation: str = "relu",
                 omega_0: float = 30.0, cam: bool = False, cam_coord: str = "viewdir",
                 cam_resolution: tuple[int, ...] | None = None, cam_mode: str = "scalar", cam_norm: str = "none"):
        super().__init__(aabb)
        if density_activation not in ("relu", "softplus"):
            raise ValueError(f"density_activation must be relu or softplus, got {density_activation!r}")
        if activation not in ("relu", "sine"):
            raise ValueError(f"activation must be relu or sine, got {activation!r}")
        if cam and activation != "relu":
            raise ValueError("cam=True needs activation='relu'")
        if cam and cam_coord not in CAM_RESOLUTION:
            raise ValueError(f"cam_coord must be viewdir or time, got {cam_coord!r}")
        self.cam_coord = cam_coord if cam else None
        res = CAM_RESOLUTION.get(cam_coord) if cam_resolution is None else tuple(cam_resolution)
        grid = dict(cam_resolution=res, cam_mode=cam_mode, norm=cam_norm)
        self.dir_enc = FrequencyEncoding(3, dir_freqs)
        if activation == "sine":
            self.pos_enc = nn.Identity()
            self.trunk = Siren(3, width, width, max(depth - 1, 1), omega_0=omega_0)
        else:
            self.pos_enc = FrequencyEncoding(3, pos_freqs)
            if self.cam_coord == "time":
                self.trunk = CAMMLP(self.pos_enc.out_dim, width, depth - 1, width, skips, **grid)
            else:
                self.trunk = MLP(self.pos_enc.out_dim, width, depth - 1, width, skips)
        self.sigma = nn.Linear(width, 1)
        if self.cam_coord == "viewdir":
            self.color = CAMMLP(width + self.dir_enc.out_dim, width // 2, 1, 3, **grid)
        else:
            self.color = MLP(width + self.dir_enc.out_dim, width // 2, 1, 3)
        self.density_activation = density_activation

    def _trunk(self, x: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        xn = self.normalize(x)
        inside = ((xn >= 0) & (xn <= 1)).all(-1, keepdim=True)
        enc = self.pos_enc(xn * 2 - 1)
        if self.cam_coord == "time":
            if t is None:
                raise ValueError("NeRFField(cam_coord='time'): density and forward need t [..., 1] in [0, 1]")
            h = torch.relu(self.trunk(enc, t * 2 - 1))
        else:
            h = torch.relu(self.trunk(enc))
        raw = self.sigma(h)
        act = torch.relu(raw) if self.density_activation == "relu" else nn.functional.softplus(raw - 1.0)
        return act * inside, h

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self._trunk(x, t)[0]

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        density, h = self._trunk(x, t)
        feat = torch.cat([h, self.dir_enc(d)], -1)
        rgb = self.color(feat, viewdir_coords(d)) if self.cam_coord == "viewdir" else self.color(feat)
        rgb = torch.sigmoid(rgb)
        return {"density": density, "rgb": rgb}
