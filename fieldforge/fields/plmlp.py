"""Continuous piecewise-linear (CPWL) MLPs: compile, list linear pieces, integrate exactly.

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


def _geometry(layers: list[PLLayer]) -> list[PLLayer]:
    """Detached float64 copies of the canonical layers, for breakpoints and vertices."""
    return [PLLayer(l.weight.detach().double(), l.bias.detach().double(), l.activation) for l in layers]


def as_layers(net: nn.Module | list[PLLayer]) -> list[PLLayer]:
    return net if isinstance(net, list) else piecewise_linear_layers(net)


# ------------------------------------------------------------------------------------ PLMLP


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


# ---------------------------------------------------------------------------- 1-D: along rays


def _pre_activation(layers: list[PLLayer], x: Tensor, dx: Tensor, upto: int) -> tuple[Tensor, Tensor]:
    """Value and directional derivative (along dx) of the pre-activation of layer ``upto``."""
    a, da = x, dx
    for layer in layers[:upto]:
        z, dz = a @ layer.weight.T + layer.bias, da @ layer.weight.T
        m, q = layer.activation.affine(z)
        a, da = m * z + q, m * dz
    layer = layers[upto]
    return a @ layer.weight.T + layer.bias, da @ layer.weight.T


def ray_breakpoints(net: nn.Module | list[PLLayer], origins: Tensor, directions: Tensor, t_near: Tensor | float,
                    t_far: Tensor | float, max_pieces: int = 4096, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """All breakpoints of the network along rays x(t) = o + t d, t in [t_near, t_far].

    Returns ``t`` [R, P+1] float64 sorted, starting at t_near and padded at the end by repeating
    t_far (so padded pieces have zero length), and ``n_pieces`` [R]. Raises
    :class:`RegionLimitError` when a ray has more than ``max_pieces`` pieces.
    """
    geo = _geometry(as_layers(net))
    o, d = origins.detach().double(), directions.detach().double()
    R = o.shape[0]
    if o.ndim != 2 or d.shape != o.shape or o.shape[1] != geo[0].weight.shape[1]:
        raise ValueError(f"origins and directions must be [R, {geo[0].weight.shape[1]}]; "
                         f"got {tuple(origins.shape)} and {tuple(directions.shape)}")
    t0 = torch.as_tensor(t_near, dtype=torch.float64).expand(R)
    t1 = torch.as_tensor(t_far, dtype=torch.float64).expand(R)
    if not bool((t1 >= t0).all()):
        raise ValueError("t_far must be >= t_near on every ray")
    outs = []
    for s in range(0, R, chunk):
        sl = slice(s, s + chunk)
        t = torch.stack([t0[sl], t1[sl]], -1)
        for l, layer in enumerate(geo[:-1]):
            ta, tb = t[:, :-1], t[:, 1:]
            live = torch.isfinite(tb)
            mid = torch.where(live, 0.5 * (ta + tb), ta.nan_to_num(0.0, posinf=0.0))
            x = o[sl, None] + mid[..., None] * d[sl, None]
            z, dz = _pre_activation(geo, x, d[sl, None].expand_as(x), l)
            bp = torch.tensor(layer.activation.breakpoints, dtype=torch.float64)
            roots = mid[..., None, None] + (bp - z[..., None]) / dz[..., None]
            ok = (roots > ta[..., None, None]) & (roots < tb[..., None, None]) & live[..., None, None]
            # interval-major candidates [t_k, roots in (t_k, t_k+1)...], compacted without a big sort
            cand = torch.cat([torch.cat([ta[..., None], torch.where(ok, roots, torch.inf).flatten(2)], 2).flatten(1),
                              t[:, -1:]], 1)
            valid = torch.isfinite(cand)
            n = valid.sum(1)
            if int(n.max()) - 1 > max_pieces:
                raise RegionLimitError(f"a ray has {int(n.max()) - 1} linear pieces (> max_pieces={max_pieces})")
            pos = torch.where(valid, valid.cumsum(1) - 1, int(n.max()))
            t = torch.full((len(cand), int(n.max()) + 1), torch.inf, dtype=torch.float64).scatter_(1, pos, cand)
            t = torch.sort(t[:, :-1], 1).values
        outs.append(t)
    P1 = max(t.shape[1] for t in outs)
    t = torch.cat([torch.nn.functional.pad(t, (0, P1 - t.shape[1]), value=torch.inf) for t in outs])
    n_pieces = torch.isfinite(t).sum(1) - 1
    return torch.where(torch.isfinite(t), t, t1[:, None]), n_pieces


def integrate_rays(net: nn.Module, origins: Tensor, directions: Tensor, t_near: Tensor | float,
                   t_far: Tensor | float, max_pieces: int = 4096) -> Tensor:
    """Exact integral over t in [t_near, t_far] of the network along each ray -> [R, n_out]."""
    layers = as_layers(net)
    t, _ = ray_breakpoints(layers, origins, directions, t_near, t_far, max_pieces)
    dt = t[:, 1:] - t[:, :-1]
    ray, piece = torch.nonzero(dt > 0, as_tuple=True)
    mid = 0.5 * (t[ray, piece] + t[ray, piece + 1])
    x = origins.detach().double()[ray] + mid[:, None] * directions.detach().double()[ray]
    vals = evaluate(layers, x) * dt[ray, piece, None].to(layers[0].weight.dtype)
    out = vals.new_zeros(origins.shape[0], vals.shape[-1])
    return out.index_add(0, ray, vals)


# -------------------------------------------------------------------------- public 1/2/3-D API


def _box(lo, hi) -> tuple[Tensor, Tensor]:
    lo = torch.as_tensor(lo, dtype=torch.float64).reshape(-1)
    hi = torch.as_tensor(hi, dtype=torch.float64).reshape(-1)
    if lo.shape != hi.shape or lo.numel() not in (1, 2, 3):
        raise ValueError(f"lo and hi must both have 1, 2 or 3 entries; got {lo.numel()} and {hi.numel()}")
    if not bool((hi > lo).all()) or not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise ValueError(f"empty or inverted box: need finite lo < hi on every axis; got lo={lo.tolist()}, "
                         f"hi={hi.tolist()}")
    return lo, hi


def regions(net: nn.Module, lo, hi, condition: Tensor | None = None, max_regions: int = 100_000):
    """Linear pieces of the network over the box [lo, hi] (1, 2 or 3-D); see :class:`Regions`.

    ``condition`` [B, k] appends inputs that are constant over the box (one domain per row);
    the network's input is then [x, condition].
    """
    from fieldforge.fields.pl_regions import Regions, box_regions

    lo, hi = _box(lo, hi)
    layers = as_layers(net)
    if lo.numel() == 1:
        if condition is not None:
            raise ValueError("condition is only supported for 2-D and 3-D boxes")
        t, n = ray_breakpoints(layers, lo[None], torch.ones(1, 1, dtype=torch.float64), 0.0,
                               float(hi - lo), max_pieces=max_regions)
        t = t[0, : int(n[0]) + 1] + lo
        ends = torch.stack([t[:-1], t[1:]], -1)
        geo = _geometry(layers)
        mid = ends.mean(-1, keepdim=True)
        A, c = _affine_at(geo, mid, torch.ones_like(mid))
        return Regions(dim=1, domain=torch.zeros(len(ends), dtype=torch.long), volume=ends[:, 1] - ends[:, 0],
                       centroid=mid, A=A, c=c, intervals=ends)
    return box_regions(layers, lo, hi, condition, max_regions)


def _affine_at(geo: list[PLLayer], x: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
    """For 1-D input: slope A [N, n_out, 1] and offset c [N, n_out] of the output at x [N, 1]."""
    z, dz = _pre_activation(geo, x, dx, len(geo) - 1)
    return dz[..., None], z - dz * x


def integrate(net: nn.Module, lo, hi, condition: Tensor | None = None, max_regions: int = 100_000,
              chunk: int = 256) -> Tensor:
    """Exact integral of the network over the box [lo, hi] (1, 2 or 3-D) -> [n_out], or
    [B, n_out] with ``condition`` [B, k] (extra inputs constant over the box), processed
    ``chunk`` domains at a time (``max_regions`` applies per chunk)."""
    lo, hi = _box(lo, hi)
    layers = as_layers(net)
    if lo.numel() == 1:
        if condition is not None:
            raise ValueError("condition is only supported for 2-D and 3-D boxes")
        one = torch.ones(1, 1, dtype=torch.float64)
        return integrate_rays(layers, lo[None], one, 0.0, float(hi - lo), max_pieces=max_regions)[0]
    if condition is None:
        return regions(layers, lo, hi, None, max_regions).integral(layers)
    return torch.cat([regions(layers, lo, hi, cond, max_regions).integral(layers, cond)
                      for cond in condition.split(chunk)])


def integrate_polygon(net: nn.Module, polygon: Tensor, condition: Tensor | None = None,
                      max_regions: int = 100_000) -> Tensor:
    """Exact integral over a convex polygon (vertices [V, 2], counter-clockwise) -> [n_out]."""
    from fieldforge.fields.pl_regions import polygon_regions

    poly = torch.as_tensor(polygon, dtype=torch.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
        raise ValueError(f"polygon must be [V >= 3, 2]; got {tuple(poly.shape)}")
    layers = as_layers(net)
    cond = None if condition is None else condition.reshape(1, -1)
    reg = polygon_regions(layers, poly[None], cond, max_regions)
    out = reg.integral(layers, cond)
    return out[0] if condition is None else out
