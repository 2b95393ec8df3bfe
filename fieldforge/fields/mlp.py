"""Small MLP builder shared by the fields (ReLU hidden layers, optional skip to the input)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from fieldforge.kernels import linear


class MLP(nn.Module):
    """``in_dim -> [width] * depth -> out_dim`` with ReLU; ``skips`` re-concatenate the input
    before the listed hidden layers (NeRF's skip at layer 4)."""

    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int, skips: tuple[int, ...] = ()):
        super().__init__()
        self.skips = tuple(skips)
        layers, d = [], in_dim
        for i in range(depth):
            layers.append(nn.Linear(d + (in_dim if i in self.skips else 0), width))
            d = width
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(d, out_dim)

    def forward(self, x: Tensor, modulate: Callable[[int, Tensor], Tensor] | None = None) -> Tensor:
        """``modulate(i, h)``, if given, maps hidden layer i's pre-activation before the ReLU (CAM).
        Without it, :func:`fieldforge.kernels.linear.mlp` evaluates the layers (fused with their
        ReLUs where no gradient is wanted)."""
        if modulate is None:
            return linear.mlp(x, [(layer.weight, layer.bias) for layer in self.hidden], (self.out.weight, self.out.bias),
                              self.skips)
        h = x
        for i, layer in enumerate(self.hidden):
            if i in self.skips:
                h = torch.cat([h, x], -1)
            h = torch.relu_(modulate(i, layer(h)))  # in place on a fresh tensor
        return self.out(h)


class _TruncExp(torch.autograd.Function):
    """exp with the gradient computed from a clamped input (instant-ngp's density activation)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(-15, 15))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)
