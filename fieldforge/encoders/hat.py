"""Hat (triangle) features, piecewise linear so that exact integration
(:mod:`fieldforge.fields.piecewise`) can treat them as layers of the network they feed."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HatEncoding(nn.Module):
    """Per-axis hat (triangle) features: for each input axis i and centre c_j = lo + j h
    (j = 0..bins-1, h = (hi - lo) / (bins - 1)), feature max(0, 1 - |x_i - c_j| / h).
    Output layout [..., dim * bins], axis-major. Followed by a linear layer this is a learned
    per-axis grid with linear interpolation; it is CPWL (hat(u) = relu(u+1) - 2 relu(u) + relu(u-1))."""

    def __init__(self, dim: int, bins: int, lo: float = 0.0, hi: float = 1.0):
        super().__init__()
        if bins < 2 or not hi > lo:
            raise ValueError(f"HatEncoding needs bins >= 2 and hi > lo; got bins={bins}, lo={lo}, hi={hi}")
        self.dim, self.bins = dim, bins
        self.register_buffer("centres", torch.linspace(lo, hi, bins))
        self.width = (hi - lo) / (bins - 1)

    @property
    def out_dim(self) -> int:
        return self.dim * self.bins

    def forward(self, x: Tensor) -> Tensor:
        u = (x.unsqueeze(-1) - self.centres.to(x)) / self.width
        return (1 - u.abs()).clamp_min(0).flatten(-2)

    def as_piecewise_linear(self) -> nn.Sequential:
        return hat_basis_layers(self.dim, self.centres, self.width)


def hat_basis_layers(dim: int, centres: Tensor, width: float, scale: float = 1.0) -> nn.Sequential:
    """Per-axis hat features scale * max(0, 1 - |x_i - c_j| / width), axis-major [..., dim * D],
    as Linear(dim -> 3 dim D) + ReLU + Linear(3 dim D -> dim D) with fixed weights, using
    hat(u) = relu(u + 1) - 2 relu(u) + relu(u - 1). Encoders (e.g. a triangle shifted basis with
    a constant normalisation) return this from ``as_piecewise_linear()``."""
    D = centres.numel()
    n = dim * D
    kw = {"dtype": centres.dtype, "device": centres.device}
    first = nn.Linear(dim, 3 * n, **kw).requires_grad_(False)
    second = nn.Linear(3 * n, n, bias=False, **kw).requires_grad_(False)
    axis = torch.arange(dim).repeat_interleave(D)  # feature -> input axis
    offset = (-centres / width).repeat(dim)
    first.weight.zero_()
    second.weight.zero_()
    for k, (shift, coef) in enumerate(((1.0, 1.0), (0.0, -2.0), (-1.0, 1.0))):
        rows = torch.arange(n) + k * n
        first.weight[rows, axis] = 1.0 / width
        first.bias[rows] = offset + shift
        second.weight[torch.arange(n), rows] = coef * scale
    return nn.Sequential(first, nn.ReLU(), second)
