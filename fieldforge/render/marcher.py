"""Render rays through a :class:`~fieldforge.fields.Field` with an occupancy-grid estimator.

``render_rays`` is the differentiable training path (packed samples, nerfacc-style
callbacks: densities first, without gradients, to prune samples behind early termination,
evaluated in passes front to back so that a ray stops costing at its first opaque surface, then
the full field on the rest); ``render_camera`` renders a whole image in ray
chunks under ``no_grad`` with bounded memory, marching in passes (:func:`render_rays_passes`):
each pass evaluates the next ``per_pass`` occupied samples of every ray still above the
early-termination transmittance, so no sample is evaluated twice and at most ``per_pass - 1``
densities per ray are evaluated past termination (KiloNeRF's fast renderer does the same with 8);
the grid is walked as the march goes, so a ray's samples behind its termination are never found,
and passes grow once few rays are left.

Two compositors, picked by ``compositor``: "quadrature" (the default, NeRF's piecewise-constant
rule: one field query at each sample's midpoint) and "exact" (queries the field at both ends of
every sample and composites with density and colour affine on the sample,
:func:`~fieldforge.render.exact.exact_composite`; exact when the field is affine on each sample,
e.g. a CPWL field whose breakpoints are the sample ends, and second-order accurate otherwise).
The exact compositor returns rgb, opacity and depth only (no extra channels).

Unbounded scenes (``n_far`` > 0): the grid's samples cover the foreground box and ``n_far``
disparity-spaced samples per ray cover the rest of the ray up to ``far``
(:func:`~fieldforge.render.far.far_samples`); the field must give densities everywhere
(a contracted field).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fieldforge.fields.base import Field
from fieldforge.render.exact import exact_composite
from fieldforge.render.far import far_samples, merge_packed
from fieldforge.render.occupancy import OccupancyGrid, PackedLattice
from fieldforge.render.volume import composite, exclusive_segment_cumsum, pass_weights
from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.rays import Rays, camera_rays


def render_rays(
    field: Field, estimator: OccupancyGrid, rays: Rays, background: Tensor | None,
    render_step_size: float, near: float = 0.0, far: float = 1e10, stratified: bool = False,
    early_stop_eps: float = 1e-4, alpha_thre: float = 0.0, prune: bool = True,
    generator: torch.Generator | None = None, compositor: str = "quadrature", per_pass: int = 32,
    n_far: int = 0, return_samples: bool = False,
) -> dict[str, Tensor]:
    """Render ``rays``; returns per-ray "rgb", "opacity", "depth", extra channels and
    "num_samples" (a 0-dim tensor); with ``return_samples`` (quadrature) also the packed samples
    composited, "ray_indices", "t_starts", "t_ends", beside their "weights".

    With ``prune``, the samples kept are those of nerfacc's rule (transmittance T >= early_stop_eps
    and alpha >= alpha_thre, the latter clamped to the grid's mean occupancy), found by evaluating
    densities ``per_pass`` samples per ray at a time, front to back, and dropping a ray once T fell
    below early_stop_eps (:func:`_visible_in_passes`): a ray through occupied space costs the
    density evaluations up to its first opaque surface, not of its whole occupied length. A field
    that ``reuses_encoding`` is encoded once per sample: the passes keep the kept samples'
    encodings, and the differentiable forward takes them back (same values and gradients).
    """
    if compositor not in ("quadrature", "exact"):
        raise ValueError(f"compositor must be 'quadrature' or 'exact', got {compositor!r}")
    o, d, t = rays.origins, rays.directions, rays.times

    def points(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        return o[ray_indices] + d[ray_indices] * ((t_starts + t_ends) / 2)[:, None]

    # a field that reuses its encoding is encoded once: the pruning passes keep the kept samples' encodings
    reuse = field.reuses_encoding and field.splits_appearance and compositor == "quadrature"

    def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x, tt = points(t_starts, t_ends, ray_indices), None if t is None else t[ray_indices]
        if reuse:
            encoding = field.encode(x, tt)
            return field.geometry(x, tt, encoding=encoding)[0].reshape(-1), encoding
        return field.density(x, tt).reshape(-1)

    ray_indices, t_starts, t_ends = _samples(estimator, rays, near, far, render_step_size, n_far, stratified,
                                             generator)
    n_rays = len(rays)
    encoding = None
    if prune and (early_stop_eps > 0 or alpha_thre > 0) and len(ray_indices):
        alpha_thre = min(alpha_thre, float(estimator.occs.mean())) if alpha_thre > 0 else 0.0
        keep, encoding = _visible_in_passes(sigma_fn, ray_indices, t_starts, t_ends, n_rays, early_stop_eps,
                                            alpha_thre, per_pass)
        ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
    if compositor == "exact":
        res = _exact(field, rays, ray_indices, t_starts, t_ends, background)
        res["num_samples"] = torch.tensor(len(ray_indices))
        return res
    x, tt = points(t_starts, t_ends, ray_indices), None if t is None else t[ray_indices]
    if encoding is not None:
        density, features = field.geometry(x, tt, encoding=encoding)
        out = {"density": density, **field.appearance(features, d[ray_indices], tt)}
    else:
        out = field(x, d[ray_indices], tt)
    extras = {k: v for k, v in out.items() if k not in ("density", "rgb")}
    res = composite(t_starts, t_ends, ray_indices, n_rays, out["density"].reshape(-1), out["rgb"],
                    background, extras)
    res["num_samples"] = torch.tensor(len(ray_indices))
    if return_samples:
        res.update(ray_indices=ray_indices, t_starts=t_starts, t_ends=t_ends)
    return res


def _samples(estimator: OccupancyGrid, rays: Rays, near: float, far: float, render_step_size: float, n_far: int,
             stratified: bool = False, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The grid's packed samples, followed on each ray by ``n_far`` samples beyond its box."""
    grid = estimator.sample(rays, near=near, far=far, render_step_size=render_step_size, stratified=stratified,
                            generator=generator)
    if n_far <= 0:
        return grid
    return merge_packed(grid, far_samples(rays, estimator.aabbs[-1], n_far, near, far), len(rays))


def _exact(field: Field, rays: Rays, ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor,
           background: Tensor | None) -> dict[str, Tensor]:
    """Query the field at both ends of every sample (one batched call) and composite exactly."""
    o, d = rays.origins[ray_indices], rays.directions[ray_indices]
    x = torch.cat([o + d * t_starts[:, None], o + d * t_ends[:, None]])
    t = None if rays.times is None else rays.times[ray_indices].repeat(2, 1)
    out = field(x, d.repeat(2, 1), t)
    s0, s1 = out["density"].reshape(-1).chunk(2)
    c0, c1 = out["rgb"].chunk(2)
    res = exact_composite(t_starts, t_ends, ray_indices, len(rays), s0, s1, c0, c1, background)
    return {k: res[k] for k in ("rgb", "opacity", "depth", "weights")}


Take = Callable[[Tensor, int], tuple[Tensor, Tensor, tuple[Tensor, ...]]]


def _march_passes(take: Take, alive: Tensor, n_rays: int, per_pass: int, early_stop_eps: float,
                  visit: Callable[..., Tensor], max_points: int = 1 << 17, grow: bool = False) -> None:
    """March rays ``alive`` [A] front to back, ``per_pass`` samples per ray at a time.

    ``take(rays, step) -> (r [K], more [len(rays)], data)`` returns the next at most ``step``
    samples of each of ``rays`` (grouped by ray, front to back): their rays ``r``, whether each
    ray has samples left, and a tuple of per-sample tensors. ``visit(r, log_t, *data) ->
    sigma_delta [K]`` gets them with ``log_t`` [K] (float64), the -log transmittance of each
    sample's ray before this pass, and returns sigma * delta. A pass takes its rays in groups of
    at most ``max_points`` samples (one call each; rays are independent, so the grouping changes no
    result, only the memory held). A ray leaves the march when its samples are exhausted or, if
    ``early_stop_eps`` > 0, when its transmittance exp(-log_t) (in float32) fell below
    ``early_stop_eps``: then every later sample of the ray has T < early_stop_eps too. Work per
    pass is proportional to the samples visited, not to all samples.

    With ``grow``, a pass takes max(``per_pass``, ``max_points`` // live rays) samples per ray (as
    Instant-NGP's renderer sizes its marching steps, "Instant Neural Graphics Primitives with a
    Multiresolution Hash Encoding", arXiv:2201.05989): once most rays have terminated, the few left
    take long steps in one large call instead of many small passes, at the price of evaluating up to
    that many samples past a ray's termination.
    """
    log_t = torch.zeros(n_rays, dtype=torch.float64, device=alive.device)
    while len(alive):
        step = max(per_pass, max_points // len(alive)) if grow else per_pass
        left = []
        for group in alive.split(max(1, max_points // step)):
            r, more, data = take(group, step)
            sd = visit(r, log_t[r], *data)
            log_t.index_add_(0, r, sd.double())
            left.append(group[more])
        alive = torch.cat(left)
        if early_stop_eps > 0:
            alive = alive[torch.exp(-log_t[alive].float()) >= early_stop_eps]


def _slots(n: Tensor, step: int) -> Tensor:
    """Flat indices [K] of the first ``n[i]`` slots of each row i of an [A, step] block, row by row
    (row = index // step, slot = index % step)."""
    return torch.nonzero((torch.arange(step, device=n.device) < n[:, None]).reshape(-1))[:, 0]


def _packed_take(ray_indices: Tensor, n_rays: int) -> tuple[Take, Tensor]:
    """A ``take`` over packed samples (``ray_indices`` non-decreasing), whose data is the samples'
    indices, and the rays that have samples."""
    walk = PackedLattice(ray_indices, torch.arange(len(ray_indices), device=ray_indices.device), n_rays)

    def take(group: Tensor, step: int) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        idx, n = walk.advance(group, step)
        sel = _slots(n, step)
        return group[sel // step], walk.counts[group] > walk.cursor[group], (idx.reshape(-1)[sel],)

    return take, torch.nonzero(walk.counts)[:, 0]


def _lattice_take(estimator: OccupancyGrid, rays: Rays, near: float, far: float, render_step_size: float,
                  n_far: int) -> Take:
    """A ``take`` that walks the grid's samples of ``rays`` on demand (:meth:`OccupancyGrid.lattice`),
    each ray's followed by its ``n_far`` samples beyond the box; its data is (t_starts, t_ends)."""
    lattice = estimator.lattice(rays, near, far, render_step_size)
    dt = render_step_size
    if n_far > 0:
        f_rays, f_starts, f_ends = far_samples(rays, estimator.aabbs[-1], n_far, near, far)
        f_counts = torch.bincount(f_rays, minlength=len(rays))
        f_first = torch.cumsum(f_counts, 0) - f_counts
        f_cursor = torch.zeros_like(f_counts)

    def take(group: Tensor, step: int) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        t, n = lattice.advance(group, step)
        if n_far <= 0:
            sel = _slots(n, step)
            ts = t.reshape(-1)[sel]
            return group[sel // step], n == step, (ts, ts + dt)
        # a ray whose grid samples ran out (n < step) continues with its far samples
        f_left = f_counts[group] - f_cursor[group]
        m = torch.where(n < step, torch.clamp(f_left, max=step - n), torch.zeros_like(n))
        sel = _slots(n + m, step)
        row, col = sel // step, sel % step
        ts = t.reshape(-1)[sel]
        te = ts + dt
        far_at = torch.nonzero(col >= n[row])[:, 0]
        f_idx = (f_first[group] + f_cursor[group] - n)[row[far_at]] + col[far_at]
        ts[far_at], te[far_at] = f_starts[f_idx], f_ends[f_idx]
        f_cursor[group] += m
        return group[row], (n == step) | (f_left > m), (ts, te)

    return take


@torch.no_grad()
def _visible_in_passes(
    sigma_fn: Callable[[Tensor, Tensor, Tensor], Tensor | tuple[Tensor, Tensor]], ray_indices: Tensor,
    t_starts: Tensor, t_ends: Tensor, n_rays: int, early_stop_eps: float, alpha_thre: float, per_pass: int,
) -> tuple[Tensor, Tensor | None]:
    """Mask [S] of the packed samples with T >= early_stop_eps and alpha >= alpha_thre (the rule of
    :func:`~fieldforge.render.volume.render_visibility_from_density`), evaluating ``sigma_fn`` only on
    the samples of each ray up to the pass in which its transmittance fell below early_stop_eps.
    When ``sigma_fn`` returns (sigmas, payload [K, C]), the payload of the kept samples is returned
    too, in their packed order (else None).

    T is accumulated in float64 and compared in float32 as the reference does; the mask equals the
    reference's up to the rounding of sums that land exactly on the threshold.
    """
    keep = torch.zeros(len(ray_indices), dtype=torch.bool, device=ray_indices.device)
    kept: list[tuple[Tensor, Tensor]] = []

    def visit(r: Tensor, log_t: Tensor, idx: Tensor) -> Tensor:
        ts, te = t_starts[idx], t_ends[idx]
        result = sigma_fn(ts, te, r)
        sigma, payload = result if isinstance(result, tuple) else (result, None)
        sd = sigma.reshape(-1) * (te - ts)
        trans = torch.exp(-(log_t + exclusive_segment_cumsum(sd.double(), r, n_rays)).to(sd.dtype))
        vis = trans >= early_stop_eps
        if alpha_thre > 0:
            vis &= 1.0 - torch.exp(-sd) >= alpha_thre
        keep[idx] = vis
        if payload is not None:
            at = torch.nonzero(vis)[:, 0]
            kept.append((idx[at], payload[at]))
        return sd

    take, alive = _packed_take(ray_indices, n_rays)
    _march_passes(take, alive, n_rays, per_pass, early_stop_eps, visit)
    if not kept:
        return keep, None
    rank = torch.cumsum(keep, 0) - 1  # a kept sample's place among the kept ones
    idx = torch.cat([i for i, _ in kept])
    payload = torch.cat([p for _, p in kept])
    out = payload.new_empty(int(keep.sum()), payload.shape[-1])
    out[rank[idx]] = payload
    return keep, out


@torch.no_grad()
def render_rays_passes(
    field: Field, estimator: OccupancyGrid, rays: Rays, background: Tensor | None, render_step_size: float,
    near: float = 0.0, far: float = 1e10, early_stop_eps: float = 1e-4, alpha_thre: float = 0.0,
    per_pass: int = 8, n_far: int = 0, max_points: int = 1 << 17, grow: bool = True,
) -> dict[str, Tensor]:
    """Render ``rays`` without gradients, marching ``per_pass`` samples per ray at a time (more
    once few rays are left, with ``grow``: :func:`_march_passes`) and evaluating the field on at
    most ``max_points`` samples per call (bounded memory). The grid's samples are found as the
    march reaches them (:meth:`OccupancyGrid.lattice`), not all at once: a ray's walk stops where
    its transmittance did.

    Same outputs as :func:`render_rays` ("rgb", "opacity", "depth", "depth_acc", extras) and the
    same samples composited (transmittance T >= early_stop_eps, alpha >= alpha_thre); the samples
    of a ray's last pass behind its termination are evaluated for density but not composited. A
    field that ``splits_appearance`` gets its appearance evaluated only on the composited samples
    of non-zero alpha.
    """
    o, dirs, times = rays.origins, rays.directions, rays.times
    n_rays = len(rays)
    alpha_thre = min(alpha_thre, float(estimator.occs.mean())) if alpha_thre > 0 else 0.0
    acc: dict[str, Tensor] = {}

    def visit(r: Tensor, log_t: Tensor, ts: Tensor, te: Tensor) -> Tensor:
        mid = (ts + te) / 2
        x, tt = o[r] + dirs[r] * mid[:, None], None if times is None else times[r]
        if field.splits_appearance:
            density, features = field.geometry(x, tt)
        else:
            out = field(x, dirs[r], tt)
            density = out["density"]
        sd, sel, w = pass_weights(density.reshape(-1) * (te - ts), r, n_rays, log_t, early_stop_eps, alpha_thre)
        w, rs = w[:, None], r[sel]
        if field.splits_appearance:
            out = field.appearance(features[sel], dirs[rs], None if tt is None else tt[sel])
        else:
            out = {k: v[sel] for k, v in out.items() if k != "density"}
        values = {"rgb": out["rgb"], "opacity": None, "depth_acc": mid[sel, None],
                  **{k: v for k, v in out.items() if k != "rgb"}}
        for k, v in values.items():
            src = w if v is None else w * v
            if k not in acc:
                acc[k] = src.new_zeros(n_rays, src.shape[1])
            acc[k].index_add_(0, rs, src)
        return sd

    take = _lattice_take(estimator, rays, near, far, render_step_size, n_far)
    _march_passes(take, torch.arange(n_rays, device=o.device), n_rays, per_pass, early_stop_eps, visit, max_points,
                  grow)
    if not acc:  # no samples: the field on an empty batch names its channels
        out = field(o[:0], dirs[:0], None if times is None else times[:0])
        acc = {k: o.new_zeros(n_rays, v.shape[-1]) for k, v in out.items() if k != "density"}
        acc["opacity"], acc["depth_acc"] = o.new_zeros(n_rays, 1), o.new_zeros(n_rays, 1)
    if background is not None:
        acc["rgb"] = acc["rgb"] + background.to(acc["rgb"]) * (1.0 - acc["opacity"])
    acc["depth"] = acc["depth_acc"] / acc["opacity"].clamp_min(1e-10)
    return acc


@torch.no_grad()
def render_camera(
    field: Field, estimator: OccupancyGrid, cameras: Cameras, background: Tensor,
    render_step_size: float, near: float = 0.0, far: float = 1e10, chunk: int = 65536,
    early_stop_eps: float = 1e-4, alpha_thre: float = 0.0, compositor: str = "quadrature", per_pass: int = 8,
    n_far: int = 0,
) -> dict[str, Tensor]:
    """Render camera 0 of ``cameras`` at its size: "rgb" [H, W, 3], "depth"/"opacity" [H, W, 1], extras."""
    H, W = int(cameras.height[0]), int(cameras.width[0])
    rays = camera_rays(cameras, 0)
    parts: dict[str, list[Tensor]] = {}
    for s in range(0, len(rays), chunk):
        if compositor == "quadrature":
            res = render_rays_passes(field, estimator, rays[s:s + chunk], background, render_step_size, near, far,
                                     early_stop_eps=early_stop_eps, alpha_thre=alpha_thre, per_pass=per_pass,
                                     n_far=n_far)
        else:
            res = render_rays(field, estimator, rays[s:s + chunk], background, render_step_size, near, far,
                              early_stop_eps=early_stop_eps, alpha_thre=alpha_thre, compositor=compositor,
                              n_far=n_far)
        for k, v in res.items():
            if k not in ("weights", "num_samples"):
                parts.setdefault(k, []).append(v)
    return {k: torch.cat(v).reshape(H, W, -1) for k, v in parts.items()}
