"""CAM: coordinate-aware modulation of an MLP's pre-activations ("Coordinate-Aware Modulation for
Neural Fields", Lee et al., ICLR 2024, arXiv:2311.14993).

Every modulated hidden layer computes ``h = W a + b``, ``h = norm(h)`` (no affine parameters),
``h = gamma(c) * h + beta(c)`` and ``a = relu(h)``, where gamma and beta are interpolated from a
small learnable grid at a coordinate ``c`` in [-1, 1]^k (k = 1 or 2). The grid has align-corners
semantics (its first and last knots sit exactly at -1 and +1) and clamps coordinates outside
[-1, 1] to the border. ``mode="scalar"`` stores one gamma and one beta per cell and layer, shared
by all channels (the MLP variants of the reference code); ``mode="vector"`` stores one per channel.
Initialisation gamma = 1, beta = 0, so a fresh CAM MLP with ``norm="none"`` is its plain MLP.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fieldforge.fields.mlp import MLP

MODES = ("scalar", "vector")
NORMS = ("none", "per_sample")


def viewdir_coords(d: Tensor) -> Tensor:
    """View directions [..., 3] -> (azimuth, elevation) [..., 2] in [-1, 1]^2.

    azimuth = atan2(d_y, d_x) / pi, elevation = atan2(d_z, |d_xy|) * 2 / pi (+1 looks along +z).
    This is the mapping the CAM paper describes, not the reference code's quirk, whose elevation
    index clamps every upward-looking direction to the first row. ``d`` need not
    be normalised. The azimuth does not wrap: the knots at -1 and +1 both describe -x.
    """
    if d.ndim < 1 or d.shape[-1] != 3:
        raise ValueError(f"viewdir_coords: expected directions [..., 3], got {tuple(d.shape)}")
    azi = torch.atan2(d[..., 1], d[..., 0]) / math.pi
    ele = torch.atan2(d[..., 2], d[..., :2].norm(dim=-1)) * (2 / math.pi)
    return torch.stack([azi, ele], -1)


class CAMGrid(nn.Module):
    """Learnable gamma/beta grid over a 1-D or 2-D coordinate for ``layers`` modulated layers.

    ``resolution[i]`` knots along coordinate axis i; ``gamma[j, i0, (i1)]`` is the value of
    output column j at c_i = -1 + 2 i / (resolution[i] - 1). ``forward(c [..., k])`` returns
    ``(gamma, beta)``, each [..., layers * n] with layer-major columns, where n = 1 in scalar mode
    and n = ``channels`` in vector mode. Linear / bilinear, align corners, border clamp.
    """

    def __init__(self, resolution: tuple[int, ...], mode: str = "scalar", channels: int = 1, layers: int = 1):
        super().__init__()
        resolution = tuple(int(r) for r in resolution)
        if len(resolution) not in (1, 2) or min(resolution) < 1:
            raise ValueError(f"CAMGrid: resolution must be 1 or 2 positive knot counts, got {resolution}")
        if mode not in MODES:
            raise ValueError(f"CAMGrid: mode must be scalar or vector, got {mode!r}")
        if int(channels) < 1 or int(layers) < 1:
            raise ValueError(f"CAMGrid: channels and layers must be >= 1, got {channels}, {layers}")
        self.resolution, self.mode, self.layers = resolution, mode, int(layers)
        self.coord_dim = len(resolution)
        self.per_layer = int(channels) if mode == "vector" else 1
        self.out_dim = self.layers * self.per_layer
        self.gamma = nn.Parameter(torch.ones(self.out_dim, *resolution))
        self.beta = nn.Parameter(torch.zeros(self.out_dim, *resolution))

    def forward(self, c: Tensor) -> tuple[Tensor, Tensor]:
        if c.ndim < 1 or c.shape[-1] != self.coord_dim:
            raise ValueError(f"CAMGrid: expected coordinates [..., {self.coord_dim}], got {tuple(c.shape)}")
        values = torch.cat([self.gamma, self.beta])  # [2 * out_dim, *resolution]
        # grid_sample: x (c_0) indexes the last axis (W), y (c_1) the one before (H)
        values = values.unsqueeze(1) if self.coord_dim == 1 else values.transpose(1, 2)
        lead = c.shape[:-1]
        xy = c.reshape(1, 1, -1, self.coord_dim).to(values.dtype)
        if self.coord_dim == 1:
            xy = torch.cat([xy, torch.zeros_like(xy)], -1)
        out = F.grid_sample(values[None], xy, mode="bilinear", padding_mode="border", align_corners=True)
        out = out[0, :, 0].T.reshape(*lead, 2 * self.out_dim)  # [..., 2 * out_dim]
        return out[..., :self.out_dim], out[..., self.out_dim:]


class CAMMLP(MLP):
    """:class:`~fieldforge.fields.mlp.MLP` with every hidden pre-activation modulated by CAM.

    Same layers and parameter names as ``MLP(in_dim, width, depth, out_dim, skips)`` (so an MLP
    state dict loads with ``strict=False``; only ``cam.*`` is missing), plus one
    :class:`CAMGrid` holding all ``depth`` layers, evaluated once per call. ``norm="per_sample"``
    is a no-affine layer norm over each sample's ``width`` channels. ``forward(x [..., in_dim],
    c [..., k]) -> [..., out_dim]``; c's leading dims broadcast against x's.
    ``cam_lr_multiplier`` is the learning-rate factor intended for :meth:`cam_parameters`.
    """

    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, skips: tuple[int, ...] = (), *,
                 cam_resolution: tuple[int, ...], cam_mode: str = "scalar", norm: str = "none",
                 cam_lr_multiplier: float = 1.0):
        if int(depth) < 1:
            raise ValueError(f"CAMMLP: depth must be >= 1 (a hidden layer to modulate), got {depth}")
        if norm not in NORMS:
            raise ValueError(f"CAMMLP: norm must be none or per_sample, got {norm!r}")
        super().__init__(in_dim, width, depth, out_dim, skips)
        self.norm, self.cam_lr_multiplier = norm, float(cam_lr_multiplier)
        self.cam = CAMGrid(cam_resolution, cam_mode, width, depth)

    def cam_parameters(self) -> Iterator[nn.Parameter]:
        """The grid parameters (gamma, beta), e.g. for an optimiser group with a larger lr."""
        return self.cam.parameters()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:  # type: ignore[override]
        gamma, beta = self.cam(c)
        gamma = gamma.unflatten(-1, (len(self.hidden), self.cam.per_layer))
        beta = beta.unflatten(-1, (len(self.hidden), self.cam.per_layer))

        def modulate(i: int, h: Tensor) -> Tensor:
            if self.norm == "per_sample":
                h = F.layer_norm(h, h.shape[-1:])
            return gamma[..., i, :] * h + beta[..., i, :]

        return super().forward(x, modulate)
