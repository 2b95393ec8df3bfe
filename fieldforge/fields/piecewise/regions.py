"""Linear regions of CPWL networks over 1-D intervals, 2-D convex polygons and 3-D boxes (float64
geometry); 1-D regions come from the ray breakpoints (:mod:`fieldforge.fields.piecewise.rays`).

Layer by layer, every cell is cut by the hyperplanes z_j(x) = beta of each neuron j and
activation breakpoint beta (the pre-activation is affine on the cell), vectorised over all cells
of all domains; the loop runs over layers, neurons and breakpoints only. The activation
pattern of a cell is then read at its centroid, which gives the affine input map of the next
layer. 2-D cells are convex polygons (Sutherland-Hodgman clipping of padded vertex lists);
3-D cells are tetrahedra (a box is 6 Kuhn tetrahedra; a cut tetrahedron splits into a
tetrahedron and a prism of 3 tetrahedra, or two prisms), grouped into regions by tracking
which side of each plane they fall on. Pieces with volume below ``1e-15`` x the domain's volume
are dropped and their volume is reported in ``Regions.dropped_volume``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fieldforge.fields.piecewise.layers import (PLLayer, RegionLimitError, as_layers, evaluate, geometry,
                                                pre_activation, single_thread)
from fieldforge.fields.piecewise.rays import ray_breakpoints

VOLUME_EPS = 1e-15  # relative to the domain's volume
SIGN_EPS = 1e-12  # relative to the scale of the plane equation on the cell


@dataclass
class Regions:
    """Linear pieces of a network: on region r, output = A[r] @ x + c[r] (x in input units).

    ``domain`` [R] says which domain (row of ``condition``) a region belongs to; ``volume`` [R]
    is length, area or volume; ``centroid`` [R, d]. 1-D: ``intervals`` [R, 2]. 2-D: ``polygons``
    [R, V, 2] counter-clockwise, NaN-padded. 3-D: ``tets`` [T, 4, 3] tile the regions,
    ``tet_region`` [T] gives each one's region.
    """

    dim: int
    domain: Tensor
    volume: Tensor
    centroid: Tensor
    A: Tensor  # [R, n_out, d]
    c: Tensor  # [R, n_out]
    intervals: Tensor | None = None
    polygons: Tensor | None = None
    tets: Tensor | None = None
    tet_region: Tensor | None = None
    dropped_volume: float = 0.0

    def __len__(self) -> int:
        return self.volume.shape[0]

    def integral(self, layers: list[PLLayer], condition: Tensor | None = None) -> Tensor:
        """sum_r volume_r * g(centroid_r) per domain -> [B, n_out] (or [n_out] without condition);
        differentiable in the weights (geometry detached)."""
        x = self.centroid
        if condition is not None:
            x = torch.cat([x, condition.detach().double()[self.domain]], -1)
        vals = evaluate(layers, x) * self.volume[:, None].to(layers[0].weight.dtype)
        n_dom = 1 if condition is None else condition.shape[0]
        out = vals.new_zeros(n_dom, vals.shape[-1]).index_add(0, self.domain, vals)
        return out[0] if condition is None else out


def _input_map(geo: list[PLLayer], d: int, condition: Tensor | None, n_dom: int) -> tuple[Tensor, Tensor]:
    """Affine map of the network input on each domain: a_0 = A x + c with x in R^d."""
    n_in = geo[0].weight.shape[1]
    k = 0 if condition is None else condition.shape[1]
    if n_in != d + k:
        raise ValueError(f"the network takes {n_in} inputs but the domain has {d} dimensions and "
                         f"condition adds {k}")
    A = torch.zeros(n_dom, n_in, d, dtype=torch.float64)
    A[:, :d, :d] = torch.eye(d, dtype=torch.float64)
    c = torch.zeros(n_dom, n_in, dtype=torch.float64)
    if condition is not None:
        c[:, d:] = condition.detach().double()
    return A, c


def _snap(s: Tensor, scale: Tensor) -> Tensor:
    return torch.where(s.abs() <= SIGN_EPS * scale, torch.zeros_like(s), s)


def _next_pattern(layer: PLLayer, B: Tensor, e: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Input map of the next layer on cells whose pre-activation is B x + e, read at points x."""
    m, q = layer.activation.affine(torch.einsum("cnd,cd->cn", B, x) + e)
    return m[..., None] * B, m * e + q


def _output_map(geo: list[PLLayer], A: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    out = geo[-1]
    return torch.einsum("on,cnd->cod", out.weight, A), c @ out.weight.T + out.bias


# ------------------------------------------------------------------------------------------ 2-D


def _polygon_area_centroid(v: Tensor, nv: Tensor) -> tuple[Tensor, Tensor]:
    """Signed area [C] and centroid [C, 2] of NaN-padded polygons [C, V, 2] with nv vertices."""
    idx = torch.arange(v.shape[1])
    nxt = torch.where(idx + 1 < nv[:, None], idx + 1, 0)
    w = v.gather(1, nxt[..., None].expand_as(v))
    valid = idx < nv[:, None]
    cross = torch.where(valid, v[..., 0] * w[..., 1] - w[..., 0] * v[..., 1], 0.0)
    area = 0.5 * cross.sum(1)
    cen = (torch.where(valid[..., None], v + w, 0.0) * cross[..., None]).sum(1) / (6 * area[:, None])
    return area, cen


def _clip_polygons(v: Tensor, nv: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the part of each convex polygon where s >= 0 (s per vertex, already snapped)."""
    C, V = s.shape
    idx = torch.arange(V)
    valid = idx < nv[:, None]
    nxt = torch.where(idx + 1 < nv[:, None], idx + 1, 0)
    w = v.gather(1, nxt[..., None].expand_as(v))
    sw = s.gather(1, nxt)
    keep = valid & (s >= 0)
    cross = valid & (((s > 0) & (sw < 0)) | ((s < 0) & (sw > 0)))
    frac = (s / torch.where(cross, s - sw, 1.0)).clamp(0, 1)
    inter = v + frac[..., None] * (w - v)
    cand = torch.stack([v, inter], 2).reshape(C, 2 * V, 2)
    mask = torch.stack([keep, cross], 2).reshape(C, 2 * V)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    out = cand.gather(1, order[..., None].expand_as(cand))
    n = mask.sum(1)
    out = torch.where((torch.arange(2 * V) < n[:, None])[..., None], out, torch.nan)
    return out[:, : int(n.max()) if len(n) else 0], n


@single_thread()
def polygon_regions(layers: list[PLLayer], polygons: Tensor, condition: Tensor | None,
                    max_regions: int) -> Regions:
    """Regions over convex polygons [B, V, 2] (one per domain, CCW or CW), see :class:`Regions`."""
    geo = geometry(layers)
    poly = polygons.double()
    B = poly.shape[0]
    area, _ = _polygon_area_centroid(poly, torch.full((B,), poly.shape[1]))
    poly = torch.where((area < 0)[:, None, None], poly.flip(1), poly)
    edges = poly.roll(-1, 1) - poly
    turn = edges[..., 0] * edges.roll(-1, 1)[..., 1] - edges[..., 1] * edges.roll(-1, 1)[..., 0]
    if bool((turn < -1e-12 * edges.norm(dim=-1).amax(1, keepdim=True) ** 2).any()) or bool((area.abs() <= 0).any()):
        raise ValueError("polygon must be convex with non-zero area")
    v, nv, dom = poly, torch.full((B,), poly.shape[1]), torch.arange(B)
    A, c = _input_map(geo, 2, condition, B)
    dom_area, dom_extent = area.abs(), poly.abs().amax((1, 2))
    dropped = 0.0
    for layer in geo[:-1]:
        # pre-activation B x + e of the cells at the start of the layer; later cells point to theirs
        Bz = torch.einsum("on,cnd->cod", layer.weight, A)
        ez = c @ layer.weight.T + layer.bias
        src = torch.arange(len(v))
        for j in range(Bz.shape[1]):
            for beta in layer.activation.breakpoints:
                Bj, ej = Bz[src, j], ez[src, j] - beta
                s = torch.einsum("cvd,cd->cv", v, Bj) + ej[:, None]
                s = _snap(s, (Bj.abs().sum(-1) * dom_extent[dom] + ej.abs())[:, None])
                valid = torch.arange(v.shape[1]) < nv[:, None]
                split = ((s > 0) & valid).any(1) & ((s < 0) & valid).any(1)
                if not bool(split.any()):
                    continue
                sv, snv, ss = v[split], nv[split], s[split]
                pv, pn = _clip_polygons(sv, snv, ss)
                mv, mn = _clip_polygons(sv, snv, -ss)
                Vn = max(v.shape[1], pv.shape[1], mv.shape[1])

                def pad(t: Tensor) -> Tensor:
                    return torch.nn.functional.pad(t, (0, 0, 0, Vn - t.shape[1]), value=torch.nan)
                new_v, new_n = torch.cat([pad(pv), pad(mv)]), torch.cat([pn, mn])
                new_dom, new_src = dom[split].repeat(2), src[split].repeat(2)
                a, _ = _polygon_area_centroid(new_v, new_n)
                big = a > VOLUME_EPS * dom_area[new_dom]
                dropped += float(a[~big].abs().sum())
                keep = ~split
                v = torch.cat([pad(v[keep]), new_v[big]])
                nv, dom, src = (torch.cat([x[keep], y[big]]) for x, y in ((nv, new_n), (dom, new_dom), (src, new_src)))
                v = v[:, : int(nv.max())]
                if v.shape[0] > max_regions:
                    raise RegionLimitError(f"more than max_regions={max_regions} linear regions "
                                           f"({v.shape[0]} after a cut)")
        _, cen = _polygon_area_centroid(v, nv)
        A, c = _next_pattern(layer, Bz[src], ez[src], cen)
    area, cen = _polygon_area_centroid(v, nv)
    Ao, co = _output_map(geo, A, c)
    return Regions(dim=2, domain=dom, volume=area, centroid=cen, A=Ao, c=co, polygons=v, dropped_volume=dropped)


# ------------------------------------------------------------------------------------------ 3-D


def _kuhn_tets(lo: Tensor, hi: Tensor) -> Tensor:
    """The 6 Kuhn tetrahedra [6, 4, 3] tiling the box [lo, hi]."""
    tets = []
    for perm in itertools.permutations(range(3)):
        p = torch.zeros(3, dtype=torch.float64)
        verts = [p.clone()]
        for axis in perm:
            p[axis] = 1.0
            verts.append(p.clone())
        tets.append(torch.stack(verts))
    return lo + torch.stack(tets) * (hi - lo)


def _tet_volume(t: Tensor) -> Tensor:
    return torch.linalg.det(t[:, 1:] - t[:, :1]).abs() / 6.0


def _prism(p: Tensor, q: Tensor) -> Tensor:
    """3 tetrahedra [3, N, 4, 3] tiling the triangular prism with ends p, q [N, 3, 3] (p_i -- q_i edges)."""
    return torch.stack([
        torch.stack([p[:, 0], p[:, 1], p[:, 2], q[:, 0]], 1),
        torch.stack([p[:, 1], p[:, 2], q[:, 0], q[:, 1]], 1),
        torch.stack([p[:, 2], q[:, 0], q[:, 1], q[:, 2]], 1),
    ])


def _split_tets(t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut tetrahedra [N, 4, 3] by the plane s = 0 (s [N, 4] with both signs on every row).
    Returns (neg tets, neg parent, pos tets, pos parent); s == 0 counts as positive."""
    order = torch.argsort(s, 1)
    P = t.gather(1, order[..., None].expand_as(t))
    S = s.gather(1, order)
    k = (S < 0).sum(1)

    def cut(i: int, j: int, rows: Tensor) -> Tensor:
        si, sj = S[rows, i, None], S[rows, j, None]
        return P[rows, i] + si / (si - sj) * (P[rows, j] - P[rows, i])

    negs, negp, poss, posp = [], [], [], []
    r = torch.nonzero(k == 1)[:, 0]
    if len(r):
        a, b, c, d = (P[r, i] for i in range(4))
        pb, pc, pd = cut(0, 1, r), cut(0, 2, r), cut(0, 3, r)
        negs.append(torch.stack([a, pb, pc, pd], 1)[None])
        negp.append(r[None])
        poss.append(_prism(torch.stack([pb, pc, pd], 1), torch.stack([b, c, d], 1)))
        posp.append(r[None].expand(3, -1))
    r = torch.nonzero(k == 3)[:, 0]
    if len(r):
        a, b, c, d = (P[r, i] for i in range(4))
        pa, pb, pc = cut(0, 3, r), cut(1, 3, r), cut(2, 3, r)
        poss.append(torch.stack([d, pa, pb, pc], 1)[None])
        posp.append(r[None])
        negs.append(_prism(torch.stack([pa, pb, pc], 1), torch.stack([a, b, c], 1)))
        negp.append(r[None].expand(3, -1))
    r = torch.nonzero(k == 2)[:, 0]
    if len(r):
        a, b, c, d = (P[r, i] for i in range(4))
        pac, pad, pbc, pbd = cut(0, 2, r), cut(0, 3, r), cut(1, 2, r), cut(1, 3, r)
        negs.append(_prism(torch.stack([a, pac, pad], 1), torch.stack([b, pbc, pbd], 1)))
        negp.append(r[None].expand(3, -1))
        poss.append(_prism(torch.stack([c, pac, pbc], 1), torch.stack([d, pad, pbd], 1)))
        posp.append(r[None].expand(3, -1))

    def cat(parts: list[Tensor], shape: tuple) -> Tensor:
        return torch.cat([p.reshape(-1, *shape) for p in parts]) if parts else torch.zeros(0, *shape)
    return cat(negs, (4, 3)), cat(negp, ()).long(), cat(poss, (4, 3)), cat(posp, ()).long()


@single_thread()
def box_regions(layers: list[PLLayer], lo: Tensor, hi: Tensor, condition: Tensor | None,
                max_regions: int, max_tets: int = 2_000_000) -> Regions:
    """Regions over the 2-D or 3-D box [lo, hi], one domain per row of ``condition``; in 3-D
    also at most ``max_tets`` tetrahedra (about 100 bytes each)."""
    n_dom = 1 if condition is None else condition.shape[0]
    if lo.numel() == 2:
        rect = torch.stack([lo, torch.stack([hi[0], lo[1]]), hi, torch.stack([lo[0], hi[1]])])
        return polygon_regions(layers, rect.expand(n_dom, 4, 2), condition, max_regions)
    geo = geometry(layers)
    base = _kuhn_tets(lo, hi)
    t = base.repeat(n_dom, 1, 1)
    dom = torch.arange(n_dom).repeat_interleave(6)
    region = dom.clone()
    n_regions = n_dom
    A, c = (x.repeat_interleave(6, 0) for x in _input_map(geo, 3, condition, n_dom))
    vol_eps = VOLUME_EPS * float((hi - lo).prod())
    dropped = 0.0
    extent = float(torch.maximum(lo.abs(), hi.abs()).max())
    for layer in geo[:-1]:
        Bz = torch.einsum("on,cnd->cod", layer.weight, A)
        ez = c @ layer.weight.T + layer.bias
        src = torch.arange(len(t))
        for j in range(Bz.shape[1]):
            for beta in layer.activation.breakpoints:
                Bj, ej = Bz[src, j], ez[src, j] - beta
                s = torch.einsum("cvd,cd->cv", t, Bj) + ej[:, None]
                s = _snap(s, (Bj.abs().sum(-1) * extent + ej.abs())[:, None])
                split = (s > 0).any(1) & (s < 0).any(1)
                neg_side = (s < 0).any(1)
                if bool(split.any()):
                    keep = ~split
                    sidx = torch.nonzero(split)[:, 0]
                    nt, npar, pt, ppar = _split_tets(t[split], s[split])
                    new_t, new_parent = torch.cat([nt, pt]), sidx[torch.cat([npar, ppar])]
                    new_neg = torch.arange(len(new_t)) < len(nt)
                    vol = _tet_volume(new_t)
                    big = vol > vol_eps
                    dropped += float(vol[~big].sum())
                    t = torch.cat([t[keep], new_t[big]])
                    neg_side = torch.cat([neg_side[keep], new_neg[big]])
                    dom, region, src = (torch.cat([x[keep], x[new_parent[big]]]) for x in (dom, region, src))
                # a region with tetrahedra on both sides splits: its negative side gets a new id
                has_neg = torch.zeros(n_regions, dtype=torch.bool).index_fill(0, region[neg_side], True)
                has_pos = torch.zeros(n_regions, dtype=torch.bool).index_fill(0, region[~neg_side], True)
                cut = has_neg & has_pos
                new_id = torch.cumsum(cut.long(), 0) - 1 + n_regions
                move = neg_side & cut[region]
                region = torch.where(move, new_id[region], region)
                n_regions += int(cut.sum())
                if n_regions > max_regions or len(t) > max_tets:
                    raise RegionLimitError(f"more than max_regions={max_regions} linear regions or max_tets={max_tets} "
                                           f"tetrahedra ({n_regions} regions in {len(t)} tetrahedra after a cut)")
        A, c = _next_pattern(layer, Bz[src], ez[src], t.mean(1))
    # compact region ids and aggregate tetrahedra per region
    ids, region = torch.unique(region, return_inverse=True)
    R = len(ids)
    vol = _tet_volume(t)
    volume = torch.zeros(R, dtype=torch.float64).index_add(0, region, vol)
    centroid = torch.zeros(R, 3, dtype=torch.float64).index_add(0, region, vol[:, None] * t.mean(1))
    centroid = centroid / volume[:, None]
    first = torch.full((R,), len(t), dtype=torch.long).scatter_reduce(0, region, torch.arange(len(t)), "amin")
    Ao, co = _output_map(geo, A[first], c[first])
    return Regions(dim=3, domain=dom[first], volume=volume, centroid=centroid, A=Ao, c=co, tets=t,
                   tet_region=region, dropped_volume=dropped)


def box_bounds(lo, hi) -> tuple[Tensor, Tensor]:
    """``lo`` and ``hi`` as float64 vectors of 1, 2 or 3 entries; a ValueError unless finite lo < hi."""
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
    lo, hi = box_bounds(lo, hi)
    layers = as_layers(net)
    if lo.numel() == 1:
        if condition is not None:
            raise ValueError("condition is only supported for 2-D and 3-D boxes")
        t, n = ray_breakpoints(layers, lo[None], torch.ones(1, 1, dtype=torch.float64), 0.0,
                               float(hi - lo), max_pieces=max_regions)
        t = t[0, : int(n[0]) + 1] + lo
        ends = torch.stack([t[:-1], t[1:]], -1)
        geo = geometry(layers)
        mid = ends.mean(-1, keepdim=True)
        A, c = _affine_at(geo, mid, torch.ones_like(mid))
        return Regions(dim=1, domain=torch.zeros(len(ends), dtype=torch.long), volume=ends[:, 1] - ends[:, 0],
                       centroid=mid, A=A, c=c, intervals=ends)
    return box_regions(layers, lo, hi, condition, max_regions)


def _affine_at(geo: list[PLLayer], x: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
    """For 1-D input: slope A [N, n_out, 1] and offset c [N, n_out] of the output at x [N, 1]."""
    z, dz = pre_activation(geo, x, dx, len(geo) - 1)
    return dz[..., None], z - dz * x
