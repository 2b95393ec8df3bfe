"""Shifted-basis embeddings ("Rethinking Positional Encoding", Zheng et al. 2021, arXiv:2107.02561).

Per axis, x in [0, 1] is embedded against D centres t_j = j / D:
- ``gaussian``: phi = exp(-0.5 (x - t_j)^2 / width^2)        (width = sigma, default 1/D)
- ``triangle``: phi = max(0, 1 - |x - t_j| / width)          (width = d, default 1/D; with a
  linear layer this is a learned 1-D grid with linear interpolation)
Multi-D inputs concatenate the per-axis embeddings (axis-major, out_dim = d * D). Non-periodic.
Normalisation: ``fixed`` divides by the largest row norm over the whole domain (a constant, the
default; equal for any batch), ``batch_max_row`` by the largest row norm of the batch (the
reference notebooks), ``none`` leaves it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from fieldforge.encoders.base import Encoding, positive
from fieldforge.encoders.hat import hat_basis_layers

BASES = ("gaussian", "triangle")
NORMALIZE = ("fixed", "batch_max_row", "none")


class ShiftedBasisEncoding(Encoding):
    """Separable shifted-basis embedding, x in [0, 1]^d -> [..., d * n_centres]."""

    input_range = (0.0, 1.0)

    def __init__(self, in_dim: int, n_centres: int = 256, basis: str = "gaussian", width: float | None = None,
                 normalize: str = "fixed"):
        super().__init__(in_dim)
        if basis not in BASES:
            raise ValueError(f"ShiftedBasisEncoding: basis must be one of {BASES}, got {basis!r}")
        if normalize not in NORMALIZE:
            raise ValueError(f"ShiftedBasisEncoding: normalize must be one of {NORMALIZE}, got {normalize!r}")
        if int(n_centres) < 1:
            raise ValueError(f"ShiftedBasisEncoding: n_centres must be >= 1, got {n_centres}")
        self.n_centres, self.basis, self.normalize = int(n_centres), basis, normalize
        self.width = positive("width", 1.0 / self.n_centres if width is None else width, "ShiftedBasisEncoding")
        self.register_buffer("centres", torch.arange(self.n_centres, dtype=torch.float32) / self.n_centres)
        self.out_dim = self.in_dim * self.n_centres
        # the largest 1-D row norm over [0, 1] (on a lattice 8x finer than the centres); separable,
        # so the largest d-D row norm is sqrt(d) times it
        lattice = torch.linspace(0, 1, 8 * self.n_centres + 1, dtype=torch.float64)[:, None]
        max1d = self._raw(lattice, self.centres.double()).norm(dim=-1).max()
        self.fixed_norm = float(max1d) * math.sqrt(self.in_dim)

    def _raw(self, x: Tensor, centres: Tensor) -> Tensor:
        diff = x[..., None] - centres  # [..., d, D]
        if self.basis == "gaussian":
            phi = torch.exp(-0.5 * (diff / self.width) ** 2)
        else:
            phi = (1 - diff.abs() / self.width).clamp_min(0)
        return phi.flatten(-2)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        psi = self._raw(x, self.centres.to(x.dtype))
        if self.normalize == "fixed":
            return psi / self.fixed_norm
        if self.normalize == "batch_max_row":
            return psi / psi.reshape(-1, self.out_dim).norm(dim=-1).max().clamp_min(1e-12)
        return psi

    def as_piecewise_linear(self) -> torch.nn.Sequential:
        """The triangle basis as fixed Linear/ReLU layers (exact integration, :mod:`fieldforge.fields.piecewise`).

        Only for ``basis="triangle"`` with a constant normalisation ("fixed" or "none"); the
        Gaussian basis and the batch-dependent normalisation are not piecewise linear.
        """
        if self.basis != "triangle" or self.normalize == "batch_max_row":
            raise ValueError(f"ShiftedBasisEncoding: basis={self.basis!r}, normalize={self.normalize!r} is not "
                             "piecewise linear (needs basis='triangle' and normalize 'fixed' or 'none')")
        scale = 1.0 / self.fixed_norm if self.normalize == "fixed" else 1.0
        return hat_basis_layers(self.in_dim, self.centres, self.width, scale)


def stable_rank(psi: Tensor) -> float:
    """Stable rank sum_i s_i^2 / s_1^2 of an embedded sample matrix ``psi`` [N, D]."""
    s = torch.linalg.svdvals(psi.double())
    return float((s**2).sum() / s[0] ** 2)


def distance_preservation(encode: Callable[[Tensor], Tensor], n_samples: int = 1000, threshold: float = 0.1) -> float:
    """Half-width (in domain units) of the correlation kernel of a 1-D embedding on [0, 1].

    corr(delta) = <psi(0.5), psi(0.5 + delta)> of unit-normalised embeddings for delta on the
    lattice k / n_samples inside [0, 1]; returns #{delta: corr > threshold} / n_samples / 2.
    """
    x = torch.arange(n_samples, dtype=torch.float64)[:, None] / n_samples
    psi = torch.nn.functional.normalize(encode(x).double(), dim=-1)
    corr = psi @ psi[n_samples // 2]
    return float((corr > threshold).sum()) / n_samples / 2
