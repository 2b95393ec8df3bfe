"""``fieldforge bench integrate``: plain Monte Carlo vs piecewise-linear control variates on a
real light-transport integral, per pixel, at equal samples and at equal wall time.

Scene (procedural, analytic ray queries, world z up): a grey ground plane z = 0, three diffuse
spheres and a square area light facing down. Per pixel the integral is direct illumination at
the first hit x (normal n, albedo rho) in 2-D primary-sample space u in [0, 1]^2 mapped
uniformly onto the light (pdf 1 in u, the light's area folded into f):

    f(u) = Le rho / pi * max(0, n.w) max(0, -n_l.w) / r^2 * area * V(x, y(u)),  w = (y - x) / r

Control-variate estimator: a CPWL MLP g(u, c) conditioned on per-pixel features c (hit point,
normal, albedo and Fourier features of the hit point: constant over the pixel's domain, so g
stays CPWL in u) is trained on a first share of each pixel's samples; alpha per pixel is fitted
on the same share; the exact per-pixel integral G plus the MC residual over the remaining,
independent samples gives the unbiased CV estimate. Equal-samples compares against plain MC
with the same total spp; equal-time gives plain MC as many spp as fit in the CV wall time.
The reference is jittered-stratified MC with ``--ref-spp`` samples (a square number).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldforge.errors import FieldforgeError
from fieldforge.fields.piecewise import PLMLP, integrate
from fieldforge.render.control_variates import OnlineControlVariate, cv_estimate, mc_estimate, optimal_alpha
from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.rays import camera_rays

SPHERES = torch.tensor([[-0.6, 0.2, 0.35, 0.35], [0.45, -0.1, 0.5, 0.5], [0.1, 0.75, 0.2, 0.2]])  # centre, radius
SPHERE_ALBEDO = torch.tensor([[0.8, 0.25, 0.2], [0.25, 0.7, 0.3], [0.2, 0.35, 0.85]])
GROUND_ALBEDO = torch.tensor([0.7, 0.7, 0.7])
LIGHT_CENTRE, LIGHT_SIZE, LIGHT_LE = torch.tensor([0.0, 0.0, 2.2]), 1.0, 6.0  # square in z = 2.2, facing -z


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", type=int, default=64, help="image width = height in pixels")
    p.add_argument("--spp", type=int, default=32, help="samples per pixel for both estimators")
    p.add_argument("--train-share", type=float, default=0.5, help="share of the CV's spp used to train g and alpha")
    p.add_argument("--ref-spp", type=int, default=4096, help="reference samples per pixel (a square number)")
    p.add_argument("--width", type=int, default=32, help="hidden width of the CPWL control variate g")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of g")
    p.add_argument("--train-steps", type=int, default=1000, help="Adam steps to fit g")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate for g")
    p.add_argument("--max-regions", type=int, default=200_000, help="region limit per chunk of pixels")
    p.add_argument("--alpha", default="fit", help="'fit' (per pixel, from the training share) or a number")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (small-tensor loops: 1 is often fastest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("integrate.json"), help="JSON table to write")
    p.add_argument("--png", type=Path, default=None, help="side-by-side PNG: reference | MC | CV")


def _camera(res: int) -> Cameras:
    eye, target = torch.tensor([0.0, -3.2, 2.0]), torch.tensor([0.0, 0.15, 0.35])
    fwd = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, torch.tensor([0.0, 0, 1])), dim=0)
    down = torch.linalg.cross(fwd, right)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.stack([right, down, fwd], 1)
    c2w[:3, 3] = eye
    f = res / (2 * math.tan(math.radians(40) / 2))
    K = torch.tensor([[f, 0, res / 2], [0, f, res / 2], [0, 0, 1.0]])
    return Cameras(K=K[None], c2w=c2w[None], width=torch.tensor([res]), height=torch.tensor([res]))


def _sphere_hits(o: Tensor, d: Tensor) -> Tensor:
    """Nearest positive hit distance [..., S] of rays with each sphere (inf when missed)."""
    oc = o[..., None, :] - SPHERES[:, :3]
    b = (oc * d[..., None, :]).sum(-1)
    c = (oc * oc).sum(-1) - SPHERES[:, 3] ** 2
    disc = b * b - c
    t = -b - disc.clamp_min(0).sqrt()
    return torch.where((disc > 0) & (t > 1e-6), t, torch.inf)


def primary_hits(res: int) -> dict[str, Tensor]:
    """First hit per pixel: position, normal, albedo and a mask of pixels that hit something."""
    rays = camera_rays(_camera(res))
    o, d = rays.origins, rays.directions
    ts = _sphere_hits(o, d)
    t_plane = torch.where(d[:, 2] < 0, -o[:, 2] / d[:, 2], torch.inf)
    t_all = torch.cat([ts, t_plane[:, None]], 1)
    t, idx = t_all.min(1)
    hit = torch.isfinite(t) & (t < 20)
    x = o + torch.where(hit, t, 0.0)[:, None] * d
    is_sphere = idx < len(SPHERES)
    k = idx.clamp_max(len(SPHERES) - 1)
    n = torch.where(is_sphere[:, None], (x - SPHERES[k, :3]) / SPHERES[k, 3:], torch.tensor([0.0, 0, 1]))
    albedo = torch.where(is_sphere[:, None], SPHERE_ALBEDO[k], GROUND_ALBEDO)
    return {"x": x, "n": n, "albedo": albedo * hit[:, None], "hit": hit}


def radiance(hits: dict[str, Tensor], u: Tensor, visibility: bool = True) -> Tensor:
    """Integrand f(u) [P, N, 3] for light samples u [P, N, 2] (pdf 1 on [0, 1]^2)."""
    x = hits["x"][:, None]
    n = hits["n"][:, None]
    y = LIGHT_CENTRE + torch.cat([(u - 0.5) * LIGHT_SIZE, torch.zeros_like(u[..., :1])], -1)
    w = y - x
    r2 = (w * w).sum(-1)
    w_hat = w / r2.sqrt()[..., None]
    geom = (n * w_hat).sum(-1).clamp_min(0) * w_hat[..., 2].clamp_min(0) / r2 * LIGHT_SIZE ** 2
    # visibility: does the segment from x (offset along n) to y cross a sphere?
    xo = x + 1e-4 * n
    seg = y - xo
    oc = xo[..., None, :] - SPHERES[:, :3]
    a = (seg * seg).sum(-1)[..., None]
    b = (oc * seg[..., None, :]).sum(-1)
    c = (oc * oc).sum(-1) - SPHERES[:, 3] ** 2
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    s1, s2 = (-b - sq) / a, (-b + sq) / a
    blocked = ((disc > 0) & (s2 > 1e-6) & (s1 < 1)).any(-1)
    return (LIGHT_LE / math.pi) * hits["albedo"][:, None] * (geom * (~blocked | (not visibility)))[..., None]


def pixel_scale(hits: dict[str, Tensor]) -> Tensor:
    """Deterministic per-pixel scale [P, 3]: the unshadowed integrand averaged on a fixed 4x4 grid."""
    grid = (torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(-1, 2) + 0.5) / 4
    return radiance(hits, grid.expand(hits["x"].shape[0], -1, -1), visibility=False).mean(1)


def _features(hits: dict[str, Tensor]) -> Tensor:
    """Per-pixel conditioning of g: constant over the pixel's integration domain."""
    x = hits["x"]
    freqs = 2.0 ** torch.arange(3) * math.pi
    fx = (x[..., None] * freqs).flatten(1)
    return torch.cat([x, hits["n"], hits["albedo"], torch.sin(fx), torch.cos(fx)], 1)


def _chunked(fn, P: int, n: int, chunk_samples: int = 1 << 20) -> list:
    step = max(1, chunk_samples // max(n, 1))
    return [fn(slice(s, s + step)) for s in range(0, P, step)]


def render_mc(hits: dict[str, Tensor], spp: int, gen: torch.Generator, stratified: bool = False):
    """Plain MC (or jittered stratified when ``stratified``) per pixel -> (value [P, 3], variance [P, 3])."""
    P = hits["x"].shape[0]
    side = int(round(math.sqrt(spp)))

    def run(sl):
        h = {k: v[sl] for k, v in hits.items()}
        u = torch.rand(h["x"].shape[0], spp, 2, generator=gen)
        if stratified:
            g = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
            u = (g + u) / side
        est = mc_estimate(radiance(h, u), torch.ones(u.shape[:2]))
        return est.value, est.variance
    parts = _chunked(run, P, spp)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def render_cv(hits: dict[str, Tensor], spp: int, args, gen: torch.Generator) -> dict:
    """Control-variate render; returns value, variance and timings of its stages."""
    P = hits["x"].shape[0]
    n0 = max(2, int(round(spp * args.train_share)))
    n1 = spp - n0
    if n1 < 2:
        raise FieldforgeError(f"--spp {spp} with --train-share {args.train_share} leaves < 2 samples for the estimate")
    times = {}
    t = time.perf_counter()
    cond, scale = _features(hits), pixel_scale(hits)
    inv = torch.where(scale > 0, 1 / scale, 0.0)
    u0 = torch.rand(P, n0, 2, generator=gen)
    f0 = radiance(hits, u0)
    x0 = torch.cat([u0, cond[:, None].expand(-1, n0, -1)], -1)
    times["train_samples"] = time.perf_counter() - t
    t = time.perf_counter()
    torch.manual_seed(args.seed)
    h = PLMLP.make(2 + cond.shape[1], 1, width=args.width, depth=args.depth)  # g = scale * h
    trainer = OnlineControlVariate(h, lr=args.lr, batch=8192, generator=gen)
    target = (f0 * inv[:, None]).mean(-1, keepdim=True)  # the channels agree up to the albedo
    loss = trainer.update(x0.reshape(-1, x0.shape[-1]), target.reshape(-1, 1), torch.ones(P * n0),
                          steps=args.train_steps)
    times["train_g"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        G = scale * integrate(h, [0.0, 0.0], [1.0, 1.0], condition=cond.double(), max_regions=args.max_regions).float()
        alpha = (optimal_alpha(f0, scale[:, None] * h(x0), torch.ones(P, n0)).clamp(0, 1) if args.alpha == "fit"
                 else torch.full_like(G, float(args.alpha)))
    times["exact_integral"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        u1 = torch.rand(P, n1, 2, generator=gen)
        x1 = torch.cat([u1, cond[:, None].expand(-1, n1, -1)], -1)
        est = cv_estimate(radiance(hits, u1), scale[:, None] * h(x1), torch.ones(P, n1), G, alpha)
    times["estimate"] = time.perf_counter() - t
    return {"value": est.value, "variance": est.variance, "times": times, "train_loss": loss,
            "n_train": n0, "n_estimate": n1}


def _rmse(img: Tensor, ref: Tensor, mask: Tensor) -> float:
    return float((img[mask] - ref[mask]).square().mean().sqrt())


def _save_png(path: Path, images: list[Tensor], res: int, scale: float) -> None:
    import imageio.v3 as iio

    tiles = [(img.reshape(res, res, 3) / scale).clamp(0, 1) ** (1 / 2.2) for img in images]
    gap = torch.ones(res, 2, 3)
    row = torch.cat([t for tile in tiles for t in (tile, gap)][:-1], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, (row.numpy() * 255).round().astype(np.uint8))


def run(args: argparse.Namespace) -> int:
    side = int(round(math.sqrt(args.ref_spp)))
    if side * side != args.ref_spp or args.ref_spp < 4:
        raise FieldforgeError(f"--ref-spp must be a square number >= 4; got {args.ref_spp}")
    if args.resolution < 4 or args.spp < 4 or not 0 < args.train_share < 1:
        raise FieldforgeError("need --resolution >= 4, --spp >= 4 and 0 < --train-share < 1")
    if args.alpha != "fit":
        try:
            float(args.alpha)
        except ValueError:
            raise FieldforgeError(f"--alpha must be 'fit' or a number; got {args.alpha!r}") from None
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    hits = primary_hits(args.resolution)
    mask = hits["hit"]
    t = time.perf_counter()
    ref, ref_var = render_mc(hits, args.ref_spp, gen, stratified=True)
    t_ref = time.perf_counter() - t

    t = time.perf_counter()
    mc, mc_var = render_mc(hits, args.spp, gen)
    t_mc = time.perf_counter() - t
    cv = render_cv(hits, args.spp, args, gen)
    t_cv = sum(cv["times"].values())
    spp_eq = max(1, int(args.spp * t_cv / t_mc))
    t = time.perf_counter()
    mc_eq, mc_eq_var = render_mc(hits, spp_eq, gen)
    t_mc_eq = time.perf_counter() - t

    def row(name, spp, img, var, secs):
        return {"estimator": name, "spp": spp, "rmse": _rmse(img, ref, mask),
                "variance": float(var[mask].mean()), "seconds": round(secs, 3)}
    rows = [row("mc", args.spp, mc, mc_var, t_mc), row("cv", args.spp, cv["value"], cv["variance"], t_cv),
            row("mc", spp_eq, mc_eq, mc_eq_var, t_mc_eq)]
    protocol = {
        "scene": "procedural: ground plane, 3 diffuse spheres, 1x1 square area light (Le 6) at z 2.2; "
                 "direct illumination with visibility in 2-D primary-sample space of the light",
        "resolution": [args.resolution, args.resolution], "pixels_with_hit": int(mask.sum()),
        "spp": args.spp, "cv_train_spp": cv["n_train"], "cv_estimate_spp": cv["n_estimate"],
        "reference": f"jittered stratified MC, {args.ref_spp} spp, {t_ref:.1f} s; mean per-pixel variance "
                     f"{float(ref_var[mask].mean()):.3g} (included in the RMSE)",
        "g": f"g = s_p * h(u, c_p): s_p the unshadowed integrand averaged on a fixed 4x4 grid (deterministic), "
             f"h a CPWL MLP [u(2) + {_features(hits).shape[1]} per-pixel features c_p] -> {args.depth}x{args.width} "
             f"ReLU -> 1, {args.train_steps} Adam steps on f / s_p of the training share, final normalised "
             f"loss {cv['train_loss']:.4f}",
        "alpha": "per pixel from the training share, clamped to [0, 1]" if args.alpha == "fit" else float(args.alpha),
        "cv_seconds_by_stage": {k: round(v, 3) for k, v in cv["times"].items()},
        "equal_time_row": "third row: plain MC with the spp that fits in the CV's total wall time",
        "rmse": "over pixels that hit geometry, all channels, linear radiance",
        "variance": "mean over those pixels and channels of the estimator's variance estimate (sample var / N)",
        "seed": args.seed, "threads": torch.get_num_threads(),
    }
    table = {"protocol": protocol, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=2))
    if args.png is not None:
        _save_png(args.png, [ref, mc, cv["value"]], args.resolution, float(ref[mask].quantile(0.99)))
    print(f"{'estimator':>9} {'spp':>5} {'rmse':>9} {'variance':>10} {'seconds':>8}")
    for r in rows:
        print(f"{r['estimator']:>9} {r['spp']:>5} {r['rmse']:9.5f} {r['variance']:10.3e} {r['seconds']:8.2f}")
    print(f"variance reduction at equal spp: {rows[0]['variance'] / rows[1]['variance']:.2f}x; "
          f"RMSE: mc {rows[0]['rmse']:.4f} -> cv {rows[1]['rmse']:.4f} (equal-time mc {rows[2]['rmse']:.4f})")
    print(f"wrote {args.out}" + (f" and {args.png}" if args.png else ""))
    return 0
