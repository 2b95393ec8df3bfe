"""Exact breakpoints and integrals of a CPWL network along rays x(t) = o + t d (float64 geometry;
integrals are over t, i.e. world length for unit d)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldforge.fields.piecewise.layers import PLLayer, RegionLimitError, as_layers, evaluate, geometry, pre_activation


def ray_breakpoints(net: nn.Module | list[PLLayer], origins: Tensor, directions: Tensor, t_near: Tensor | float,
                    t_far: Tensor | float, max_pieces: int = 4096, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """All breakpoints of the network along rays x(t) = o + t d, t in [t_near, t_far].

    Returns ``t`` [R, P+1] float64 sorted, starting at t_near and padded at the end by repeating
    t_far (so padded pieces have zero length), and ``n_pieces`` [R]. Raises
    :class:`RegionLimitError` when a ray has more than ``max_pieces`` pieces.
    """
    geo = geometry(as_layers(net))
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
            z, dz = pre_activation(geo, x, d[sl, None].expand_as(x), l)
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
