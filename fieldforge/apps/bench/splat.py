"""``fieldforge bench splat``: rasterizer speed and memory, and optionally a timed splat training.

Rasterizer: one WxH image (default 200x200) of N random Gaussians, all in view (centres
uniform in the view frustum at depth 2-6, isotropic-ish sizes shrinking as 1/sqrt(N) so the
image stays about equally covered), colours [N, 3], one camera. For each N it times the tile
rasterizer's forward and forward+backward (loss = sum of colour and alpha) with
``time.perf_counter``, and measures peak memory as the peak RSS of a fresh subprocess minus
its RSS just before the timed calls. The dense brute-force compositor (every pixel x every
Gaussian, autograd under checkpointing) is measured the same way where N x H x W is at most
``--dense-max`` and the ratio dense / tile is reported. Prints a table and writes JSON.

Training (``--train DATA``): trains ``splat`` for ``--minutes`` of wall time and reports the
PSNR on every ``--test-stride``-th test image (per-image mean), on the scene's background.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import time
from pathlib import Path

import torch

from fieldforge.apps.bench.runs import rss_mb
from fieldforge.errors import FieldforgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="10000,100000,300000", help="comma list of Gaussian counts")
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=200)
    p.add_argument("--dense-max", type=float, default=4.0e8, help="largest N*H*W run by the dense reference")
    p.add_argument("--tile-size", type=int, default=0, help="tile size in pixels (0: the rasterizer's default)")
    p.add_argument("--repeats", type=int, default=1, help="timed repeats per measurement (best is kept)")
    p.add_argument("--train", default=None, help="also train splat on this dataset and report test PSNR")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall time for --train")
    p.add_argument("--test-stride", type=int, default=8, help="evaluate every k-th test image")
    p.add_argument("--set", action="append", default=[], help="splat option key=value for --train")
    p.add_argument("-o", "--output", default="bench_splat.json", help="JSON output path")


def random_view(n: int, width: int, height: int, seed: int = 0):
    """N Gaussians inside the frustum of an identity camera with focal = width."""
    g = torch.Generator().manual_seed(seed)
    f = float(width)
    z = torch.rand(n, generator=g) * 4 + 2
    x = (torch.rand(n, generator=g) * width - width / 2) / f * z
    y = (torch.rand(n, generator=g) * height - height / 2) / f * z
    means = torch.stack([x, y, z], -1)
    scales = torch.exp(0.3 * torch.randn(n, 3, generator=g)) * 0.01 * math.sqrt(1e5 / n) * 200 / width
    quats = torch.randn(n, 4, generator=g)
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])[None]
    return [means, quats, scales, opac, colors], torch.eye(4)[None], K


def _measure(n, width, height, renderer, tile_size, repeats, queue) -> None:
    """Child process: time forward and forward+backward; report peak RSS increase."""
    from fieldforge.render.raster_dense import composite_dense
    from fieldforge.render.raster_project import project_gaussians
    from fieldforge.render.rasterize import rasterize

    params, vm, K = random_view(n, width, height)
    params = [p.requires_grad_(True) for p in params]
    bg = torch.ones(1, 3)

    def render():
        if renderer == "tile":
            img, alpha, meta = rasterize(*params, vm, K, width, height, backgrounds=bg, tile_size=tile_size or None)
            return img, alpha, int(meta["n_isects"][0])
        means, quats, scales, opac, colors = params
        radii, m2, depths, conics = project_gaussians(means, quats, scales, vm, K, width, height, opacities=opac)
        vis = (radii[0] > 0).all(-1)
        img, alpha = composite_dense(m2[0][vis], conics[0][vis], opac[vis], colors[vis], depths[0][vis], bg[0],
                                     width, height)
        return img, alpha, int(vis.sum())

    base = rss_mb()
    fwd, both = math.inf, math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            _, _, count = render()
        fwd = min(fwd, time.perf_counter() - t0)
    peak_fwd = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    for _ in range(repeats):
        t0 = time.perf_counter()
        img, alpha, _ = render()
        (img.sum() + alpha.sum()).backward()
        both = min(both, time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    queue.put({"renderer": renderer, "gaussians": n, "forward_s": fwd, "forward_backward_s": both,
               "peak_mb_forward": max(peak_fwd, 0.0), "peak_mb_forward_backward": max(peak, 0.0), "count": count})


def measure(n: int, width: int, height: int, renderer: str, tile_size: int, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(n, width, height, renderer, tile_size, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def bench_rasterizer(args) -> list[dict]:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows = []
    print(f"rasterizer, one {args.width}x{args.height} image, CPU threads={torch.get_num_threads()}, "
          f"tile_size={args.tile_size}")
    print(f"{'N':>8} {'renderer':>8} {'fwd s':>8} {'fwd+bwd s':>10} {'peak MB':>9} {'dense/tile fwd':>15} {'fwd+bwd':>8}")
    for n in sizes:
        tile = measure(n, args.width, args.height, "tile", args.tile_size, args.repeats)
        rows.append(tile)
        print(f"{n:>8} {'tile':>8} {tile['forward_s']:8.3f} {tile['forward_backward_s']:10.3f} "
              f"{tile['peak_mb_forward_backward']:9.0f}")
        if n * args.width * args.height <= args.dense_max:
            dense = measure(n, args.width, args.height, "dense", args.tile_size, args.repeats)
            dense["ratio_forward"] = dense["forward_s"] / tile["forward_s"]
            dense["ratio_forward_backward"] = dense["forward_backward_s"] / tile["forward_backward_s"]
            rows.append(dense)
            print(f"{n:>8} {'dense':>8} {dense['forward_s']:8.3f} {dense['forward_backward_s']:10.3f} "
                  f"{dense['peak_mb_forward_backward']:9.0f} {dense['ratio_forward']:15.1f} "
                  f"{dense['ratio_forward_backward']:8.1f}")
        else:
            print(f"{n:>8} {'dense':>8} skipped: N*H*W > --dense-max")
    return rows


def bench_training(args) -> dict:
    from fieldforge.apps.training.config import apply_overrides
    from fieldforge.apps.training.methods.splat import SplatConfig, SplatMethod
    from fieldforge.scenes import load

    scene = load(args.train)
    train, test = scene.split("train"), scene.split("test")
    cfg = apply_overrides(SplatConfig(), args.set)
    method = SplatMethod(cfg, train, torch.device("cpu"))
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < 60 * args.minutes:
        out = method.train_step(step)
        step += 1
        if step % 100 == 0:
            print(f"step {step} {time.perf_counter() - t0:7.1f}s loss {out['loss']:.4f} psnr {out['psnr']:.2f} "
                  f"gaussians {out['gaussians']}", flush=True)
    train_s = time.perf_counter() - t0
    bg = torch.tensor([1.0, 1.0, 1.0]) if scene.background == "white" else torch.zeros(3)
    psnrs = []
    for i in range(0, len(test), args.test_stride):
        rgb = method.render(test.cameras[i], bg)["rgb"]
        mse = float(((rgb - test.rgb(i, bg)) ** 2).mean())
        psnrs.append(-10 * math.log10(max(mse, 1e-10)))
    result = {"data": str(args.train), "steps": step, "train_seconds": train_s, "gaussians": len(method.model),
              "test_images": len(psnrs), "test_stride": args.test_stride, "background": scene.background,
              "psnr": sum(psnrs) / len(psnrs), "config": vars(cfg)}
    print(f"splat on {args.train}: {step} steps in {train_s:.0f}s, {len(method.model)} Gaussians, "
          f"test PSNR {result['psnr']:.2f} on {len(psnrs)} images (every {args.test_stride}th, {scene.background} bg)")
    return result


def run(args) -> int:
    if args.width <= 0 or args.height <= 0:
        raise FieldforgeError("--width and --height must be positive")
    result = {"rasterizer": bench_rasterizer(args) if args.sizes else []}
    if args.train:
        result["training"] = bench_training(args)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return 0
