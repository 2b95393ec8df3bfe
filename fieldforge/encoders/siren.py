"""SIREN (Sitzmann et al. 2020): an MLP with sine activations, a whole signal model.

Input x in [-1, 1]^d. Hidden layers compute sin(omega_0 * (W x + b)); the output layer is
linear. Initialisation: first layer U(-1/fan_in, 1/fan_in), later layers
U(-sqrt(6/fan_in)/omega_0, sqrt(6/fan_in)/omega_0) (the paper's scheme).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fieldforge.encoders.base import positive


class Siren(nn.Module):
    """Sine-activated MLP ``[..., in_dim] -> [..., out_dim]`` with ``n_layers`` hidden layers."""

    input_range = (-1.0, 1.0)

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, n_layers: int = 3,
                 omega_0: float = 30.0, first_omega_0: float | None = None):
        super().__init__()
        if min(int(in_dim), int(out_dim), int(hidden), int(n_layers)) < 1:
            raise ValueError(f"Siren: in_dim, out_dim, hidden and n_layers must be >= 1, "
                             f"got {in_dim}, {out_dim}, {hidden}, {n_layers}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.omega_0 = positive("omega_0", omega_0, "Siren")
        self.first_omega_0 = positive("first_omega_0", omega_0 if first_omega_0 is None else first_omega_0, "Siren")
        dims = [self.in_dim] + [int(hidden)] * int(n_layers)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], self.out_dim)
        with torch.no_grad():
            for i, lin in enumerate([*self.hidden, self.out]):
                fan_in = lin.weight.shape[1]
                bound = 1 / fan_in if i == 0 else math.sqrt(6 / fan_in) / self.omega_0
                lin.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"Siren: expected input [..., {self.in_dim}], got {tuple(x.shape)}")
        h = x
        for i, lin in enumerate(self.hidden):
            h = torch.sin((self.first_omega_0 if i == 0 else self.omega_0) * self._linear(i, h, x))
        return self.out(h)

    def _linear(self, i: int, h: Tensor, x: Tensor) -> Tensor:
        """Hidden layer i applied to ``h`` (``x``: the network input; subclasses may use it)."""
        return self.hidden[i](h)
