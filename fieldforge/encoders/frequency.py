"""Sinusoidal encodings sharing one layout and one input range.

Convention (used by :class:`FrequencyEncoding`, :class:`FourierFeatures` and SAPE):
- input coordinates in [-1, 1] per axis;
- phases are ``2*pi * (frequency in cycles per unit) * x``;
- layout ``[x (optional), sin(p_0), cos(p_0), sin(p_1), cos(p_1), ...]`` where ``p_k`` is the
  phase block of frequency k (d-wide for the axis-aligned NeRF encoding, 1-wide for random
  Fourier features), frequencies in ascending order, so a prefix mask is a low-pass filter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldforge.encoders.base import Encoding, positive


def sincos(phase: Tensor) -> Tensor:
    """``phase`` [..., K, w] -> [..., K*2*w] laid out as ``[sin(p_0), cos(p_0), sin(p_1), ...]``."""
    return torch.stack([torch.sin(phase), torch.cos(phase)], dim=-2).flatten(-3)


class FrequencyEncoding(Encoding):
    """NeRF positional encoding, x in [-1, 1]^d.

    ``[x, sin(f_0 x), cos(f_0 x), ..., sin(f_{L-1} x), cos(f_{L-1} x)]`` with each sin/cos block
    d-wide (NeRF code layout) and f_k = 2^k * pi (the paper's form: the lowest frequency has one
    period over [-1, 1]). ``pi_factor=False`` gives the NeRF code's f_k = 2^k.
    out_dim = d * include_input + 2 * d * n_freqs (63 for d=3, L=10).
    """

    def __init__(self, in_dim: int, n_freqs: int, include_input: bool = True, pi_factor: bool = True):
        super().__init__(in_dim)
        if int(n_freqs) < 0 or (int(n_freqs) == 0 and not include_input):
            raise ValueError(f"FrequencyEncoding: n_freqs must be >= 1 (or 0 with include_input), got {n_freqs}")
        self.n_freqs = int(n_freqs)
        self.include_input = bool(include_input)
        scale = math.pi if pi_factor else 1.0
        self.register_buffer("freqs", scale * 2.0 ** torch.arange(self.n_freqs, dtype=torch.float32))
        #: channels always passed unmasked, and features per frequency block (for SAPE)
        self.n_passthrough = self.in_dim if self.include_input else 0
        self.block_size = 2 * self.in_dim
        self.n_blocks = self.n_freqs
        self.out_dim = self.n_passthrough + self.block_size * self.n_freqs

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        enc = sincos(x[..., None, :] * self.freqs[:, None])
        return torch.cat([x, enc], -1) if self.include_input else enc


class FourierFeatures(Encoding):
    """Gaussian random Fourier features (Tancik et al. 2020), x in [-1, 1]^d.

    B [m, d] with entries ~ N(0, sigma^2) (cycles per unit of x), drawn from ``seed`` and stored
    as a buffer; rows sorted by |b| ascending (a permutation, so the feature set is unchanged,
    but a prefix is low-pass). Output ``[x (optional), sin(2 pi b_0.x), cos(2 pi b_0.x), ...]``,
    out_dim = d * include_input + 2m. Tancik's sigma for [0, 1) inputs equals sigma/2 here.
    """

    def __init__(self, in_dim: int, n_features: int = 256, sigma: float = 10.0,
                 include_input: bool = False, seed: int = 0):
        super().__init__(in_dim)
        self.sigma = positive("sigma", sigma, "FourierFeatures")
        if int(n_features) < 1:
            raise ValueError(f"FourierFeatures: n_features must be >= 1, got {n_features}")
        g = torch.Generator().manual_seed(int(seed))
        B = torch.randn(int(n_features), self.in_dim, generator=g, dtype=torch.float64) * self.sigma
        B = B[torch.argsort(B.norm(dim=1))]
        self.register_buffer("B", B.float())
        self.include_input = bool(include_input)
        self.n_passthrough = self.in_dim if self.include_input else 0
        self.block_size = 2
        self.n_blocks = int(n_features)
        self.out_dim = self.n_passthrough + 2 * self.n_blocks

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        enc = sincos((2 * math.pi) * (x @ self.B.T)[..., None])
        return torch.cat([x, enc], -1) if self.include_input else enc
