"""Continuous piecewise-linear (CPWL) MLPs compiled to canonical layers (:func:`piecewise_linear_layers`).

A network qualifies when it is an ``nn.Sequential`` (nested allowed) of ``nn.Linear``,
``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Hardtanh``, ``nn.Identity`` and modules exposing
``as_piecewise_linear() -> nn.Module`` (the protocol for piecewise-linear encoders and
fields: return an equivalent network built from the modules above, sharing parameters).
Anything else (sine, softplus, Fourier features, bilinear grids) raises
:class:`NotPiecewiseLinearError`.

Domains are in the network's input coordinates: 1-D segments and rays x(t) = o + t d
(integrals are over t, i.e. world length for unit d), 2-D rectangles or convex polygons,
3-D axis-aligned boxes. Geometry (breakpoints, vertices) is float64 and detached; the
integral is sum(volume_k * g(centroid_k)), exact because g is affine on each piece, and its
gradient with respect to the weights is exact because g is continuous (boundary terms cancel).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fieldforge.encoders.hat import HatEncoding
from fieldforge.errors import FieldforgeError


class NotPiecewiseLinearError(ValueError):
    """The network contains a module that is not continuous piecewise linear."""


class RegionLimitError(FieldforgeError):
    """The number of linear pieces passed the limit the caller set."""


@contextlib.contextmanager
def single_thread():
    """Run a block (or decorate a function) with one torch intra-op thread, restored after.
    Loops of many small tensor ops (region cutting, small-batch training) run faster on one
    thread than on several, whose start-up costs more than the work split."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass(frozen=True)
class PLActivation:
    """Continuous piecewise-linear scalar function: piece p lies between breakpoints p-1 and p
    and maps z -> slopes[p] * z + intercepts[p]."""

    breakpoints: tuple[float, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]

    def affine(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Slope and intercept of the piece containing each value of ``z`` (same shape)."""
        bp = torch.tensor(self.breakpoints, dtype=z.dtype, device=z.device)
        piece = (z.unsqueeze(-1) > bp).sum(-1)
        m = torch.tensor(self.slopes, dtype=z.dtype, device=z.device)[piece]
        q = torch.tensor(self.intercepts, dtype=z.dtype, device=z.device)[piece]
        return m, q


@dataclass
class PLLayer:
    """z = weight @ a + bias followed by ``activation`` (None for the output layer)."""

    weight: Tensor  # [n_out, n_in]
    bias: Tensor  # [n_out]
    activation: PLActivation | None


def _activation_of(module: nn.Module) -> PLActivation | None:
    if isinstance(module, nn.ReLU):
        return PLActivation((0.0,), (0.0, 1.0), (0.0, 0.0))
    if isinstance(module, nn.LeakyReLU):
        return PLActivation((0.0,), (float(module.negative_slope), 1.0), (0.0, 0.0))
    if isinstance(module, nn.Hardtanh):
        lo, hi = float(module.min_val), float(module.max_val)
        return PLActivation((lo, hi), (0.0, 1.0, 0.0), (lo, 0.0, hi))
    return None


def _tokens(module: nn.Module) -> list:
    """Flatten into ('affine', W, b) and ('act', PLActivation) tokens."""
    if hasattr(module, "as_piecewise_linear"):
        return _tokens(module.as_piecewise_linear())
    if isinstance(module, nn.Sequential):
        return [tok for child in module for tok in _tokens(child)]
    if isinstance(module, nn.Linear):
        b = module.bias if module.bias is not None else module.weight.new_zeros(module.out_features)
        return [("affine", module.weight, b)]
    if isinstance(module, (nn.Identity, nn.Flatten)):
        return []
    act = _activation_of(module)
    if act is None:
        raise NotPiecewiseLinearError(
            f"{type(module).__name__} is not continuous piecewise linear; exact integration needs "
            "nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Hardtanh or modules with as_piecewise_linear()")
    return [("act", act)]


def piecewise_linear_layers(net: nn.Module) -> list[PLLayer]:
    """Canonical form of a CPWL network: affine maps fused, one activation after each hidden
    layer, the last layer affine. Weights stay connected to the module's parameters."""
    layers: list[PLLayer] = []
    W = b = None
    for tok in _tokens(net):
        if tok[0] == "affine":
            W2, b2 = tok[1], tok[2]
            W, b = (W2, b2) if W is None else (W2 @ W, W2 @ b + b2)
        else:
            if W is None:
                raise NotPiecewiseLinearError(
                    "the network must start with an affine layer (nn.Linear or a piecewise-linear encoder)")
            layers.append(PLLayer(W, b, tok[1]))
            W = b = None
    if not layers and W is None:
        raise NotPiecewiseLinearError("the network has no nn.Linear layer")
    if W is None:
        n = layers[-1].weight.shape[0]
        W, b = torch.eye(n, dtype=layers[-1].weight.dtype), layers[-1].weight.new_zeros(n)
    layers.append(PLLayer(W, b, None))
    return layers


def evaluate(layers: list[PLLayer], x: Tensor) -> Tensor:
    """Network output [..., n_out] from the canonical layers (differentiable in the weights)."""
    a = x.to(layers[0].weight.dtype)
    for layer in layers:
        z = a @ layer.weight.T + layer.bias
        if layer.activation is None:
            return z
        m, q = layer.activation.affine(z.detach())
        a = m * z + q
    return a


def geometry(layers: list[PLLayer]) -> list[PLLayer]:
    """Detached float64 copies of the canonical layers, for breakpoints and vertices."""
    return [PLLayer(l.weight.detach().double(), l.bias.detach().double(), l.activation) for l in layers]


def as_layers(net: nn.Module | list[PLLayer]) -> list[PLLayer]:
    """The canonical layers of ``net`` (a list of layers is returned as it is)."""
    return net if isinstance(net, list) else piecewise_linear_layers(net)


class PLMLP(nn.Module):
    """A network checked to be CPWL at construction, with exact region listing and integrals."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        piecewise_linear_layers(net)  # validate now, with a clear error

    @classmethod
    def make(cls, in_dim: int, out_dim: int, width: int = 16, depth: int = 2, negative_slope: float = 0.0,
             hat_bins: int = 0, hat_range: tuple[float, float] = (0.0, 1.0)) -> "PLMLP":
        """``depth`` hidden layers of ``width`` (leaky) ReLUs; optional per-axis hat encoding."""
        mods: list[nn.Module] = []
        d = in_dim
        if hat_bins:
            enc = HatEncoding(in_dim, hat_bins, *hat_range)
            mods.append(enc)
            d = enc.out_dim
        for _ in range(depth):
            act = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
            mods += [nn.Linear(d, width), act]
            d = width
        mods.append(nn.Linear(d, out_dim))
        return cls(nn.Sequential(*mods))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def as_piecewise_linear(self) -> nn.Module:
        return self.net


def pre_activation(layers: list[PLLayer], x: Tensor, dx: Tensor, upto: int) -> tuple[Tensor, Tensor]:
    """Value and directional derivative (along dx) of the pre-activation of layer ``upto``."""
    a, da = x, dx
    for layer in layers[:upto]:
        z, dz = a @ layer.weight.T + layer.bias, da @ layer.weight.T
        m, q = layer.activation.affine(z)
        a, da = m * z + q, m * dz
    layer = layers[upto]
    return a @ layer.weight.T + layer.bias, da @ layer.weight.T
