"""Evaluating a run (``fieldforge eval``): render a split, write per-image metrics and PNGs.

Writes ``RUN/eval/<split>/metrics.json``::

    {"split", "psnr", "ssim", "num_images", "images": [{"name", "psnr", "ssim"}],
     "protocol": {"background", "resolution", "downscale", "split", "images", "metrics"},
     "steps", "train_seconds", "render_seconds_per_image"}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from fieldforge.apps.training.checkpoint import load_safe
from fieldforge.apps.training.metrics import PROTOCOL, psnr, ssim
from fieldforge.apps.training.run import RunDir, load_run
from fieldforge.errors import FieldforgeError
from fieldforge.scenes import background_rgb
from fieldforge.scenes.images import to_uint8


def evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them for None or k >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def time_bins(rows: list[dict], n_bins: int = 5) -> list[dict]:
    """Mean PSNR/SSIM of the rows (each with a "time" in [0, 1]) in ``n_bins`` equal time bins;
    bins without images are left out. The last bin includes t = 1."""
    out = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = [r for r in rows if lo <= r["time"] < hi or (b == n_bins - 1 and r["time"] == hi)]
        if sel:
            out.append({"t0": lo, "t1": hi, "num_images": len(sel), "psnr": float(np.mean([r["psnr"] for r in sel])),
                        "ssim": float(np.mean([r["ssim"] for r in sel]))})
    return out


def evaluate(run_dir: str | Path, split: str = "test", max_images: int | None = None, device: str = "auto",
             write_images: bool = True) -> dict:
    """Render ``split`` of the run (``max_images`` evenly spaced), write ``RUN/eval/<split>`` and
    return its metrics."""
    method, cfg, scene = load_run(run_dir, device)
    if split not in scene.splits:
        raise FieldforgeError(f"{scene.source}: no {split!r} split (available: {', '.join(sorted(scene.splits))})")
    sub = scene.split(split)
    if len(sub) == 0:
        raise FieldforgeError(f"{scene.source}: the {split!r} split is empty")
    rd = RunDir(Path(run_dir))
    out_dir = rd.eval_dir(split)
    out_dir.mkdir(parents=True, exist_ok=True)
    bg = background_rgb(scene.background)
    rows, seconds = [], 0.0
    for i in evenly_spaced(len(sub), max_images):
        gt = sub.rgb(i, bg)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = method.render(sub.cameras[i].to(method.device), bg.to(method.device))
        seconds += time.perf_counter() - t0
        pred = out["rgb"].float().cpu().clamp(0, 1)
        name = Path(sub.names[i]).stem
        rows.append({"name": sub.names[i], "psnr": psnr(pred, gt), "ssim": ssim(pred, gt)})
        if sub.cameras.times is not None:
            rows[-1]["time"] = float(sub.cameras.times[i])
        if write_images:
            iio.imwrite(out_dir / f"{name}.png", to_uint8(pred))
    ckpt = load_safe(rd.checkpoint)
    h, w = int(sub.cameras.height[0]), int(sub.cameras.width[0])
    result = {
        "split": split,
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "num_images": len(rows),
        "images": rows,
        "protocol": {"background": scene.background, "resolution": f"{w}x{h}", "downscale": cfg.downscale,
                     "split": split, "images": "all" if len(rows) == len(sub) else f"{len(rows)} evenly spaced of {len(sub)}",
                     "metrics": PROTOCOL, **scene.protocol},
        "steps": int(ckpt["step"]),
        "train_seconds": float(ckpt["train_seconds"]),
        "render_seconds_per_image": seconds / len(rows),
        "params": method.num_params(),
    }
    if sub.cameras.times is not None:
        result["time_bins"] = time_bins(rows)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


