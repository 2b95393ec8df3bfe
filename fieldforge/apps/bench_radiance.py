"""``fieldforge bench radiance``: train field methods on a scene under a wall-clock budget and
evaluate them at fixed training times.

For each method the run trains to the first budget, is evaluated on an evenly spaced subset of
the test split, resumes (exactly, from its checkpoint) to the next budget, and so on. Training
time is the trainer's ``train_seconds``: time inside training steps, occupancy-grid updates
included, checkpoint writing and evaluation excluded. Prints one table and writes JSON::

    {"protocol": {...}, "rows": [{"method", "minutes", "steps", "train_seconds", "psnr", "ssim",
                                  "num_images", "rays_per_second", "render_seconds_per_image"}]}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import torch

from fieldforge.apps import train as train_verb
from fieldforge.apps.evaluate import evaluate
from fieldforge.apps.run import RunDir
from fieldforge.errors import FieldforgeError

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nerf-synthetic-lego-200"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset folder (default: ../shared lego 200 px)")
    p.add_argument("--methods", default="ngp,nerf", help="comma-separated method names")
    p.add_argument("--minutes", default="2,5,10", help="comma-separated training times to evaluate at")
    p.add_argument("--test-images", type=int, default=25, help="evenly spaced test views per evaluation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="method option override applied to every method (repeatable)")
    p.add_argument("--runs", default="benchmarks/runs/radiance", help="folder for the run directories")
    p.add_argument("--out", default="benchmarks/results/radiance.json")
    p.add_argument("--device", default="cpu")


def _rays_per_second(run: RunDir) -> float | None:
    if not run.log.is_file():
        return None
    lines = [json.loads(s) for s in run.log.read_text().splitlines() if s.strip()]
    return lines[-1].get("rays_per_second") if lines else None


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def bench_method(name: str, data: str, minutes: list[float], test_images: int, runs: Path, device: str,
                 overrides: list[str]) -> tuple[list[dict], dict]:
    run_dir = runs / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    parser = argparse.ArgumentParser()
    train_verb.add_arguments(parser)
    rows = []
    for i, m in enumerate(minutes):
        argv = [data, "--method", name, "--out", str(run_dir), "--minutes", str(m), "--device", device, "--quiet"]
        argv += ["--resume"] if i else sum((["--set", o] for o in overrides), [])
        train_verb.run(parser.parse_args(argv))
        r = evaluate(run_dir, "test", test_images, device, write_images=False)
        rows.append({"method": name, "minutes": m, "steps": r["steps"], "train_seconds": round(r["train_seconds"], 1),
                     "psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4), "num_images": r["num_images"],
                     "rays_per_second": _rays_per_second(RunDir(run_dir)),
                     "render_seconds_per_image": round(r["render_seconds_per_image"], 2)})
        print(json.dumps(rows[-1]), flush=True)
        protocol = r["protocol"]
    return rows, protocol


def run(args: argparse.Namespace) -> int:
    if not Path(args.data).exists():
        raise FieldforgeError(f"{args.data}: dataset not found (pass --data)")
    try:
        minutes = sorted(float(m) for m in args.minutes.split(","))
    except ValueError:
        raise FieldforgeError(f"--minutes {args.minutes!r}: expected comma-separated numbers") from None
    if not minutes or minutes[0] <= 0:
        raise FieldforgeError("--minutes: training times must be positive")
    rows, protocol = [], {}
    for name in [m for m in args.methods.split(",") if m]:
        r, protocol = bench_method(name, args.data, minutes, args.test_images, Path(args.runs), args.device,
                                   args.overrides)
        rows += r
    print(f"\n{'method':<8} {'min':>5} {'steps':>6} {'PSNR':>7} {'SSIM':>6} {'rays/s':>8} {'render s/img':>12}")
    for r in rows:
        print(f"{r['method']:<8} {r['minutes']:>5g} {r['steps']:>6} {r['psnr']:>7.2f} {r['ssim']:>6.3f} "
              f"{r['rays_per_second'] or 0:>8,.0f} {r['render_seconds_per_image']:>12.2f}")
    result = {"protocol": {**protocol, "data": str(args.data), "minutes": minutes, "overrides": args.overrides,
                           "train_seconds": "time inside training steps (grid updates included; checkpoints and eval excluded)",
                           "machine": machine(), "command": "fieldforge bench radiance " + " ".join(
                               f"--{k.replace('_', '-')} {v}" for k, v in (("methods", args.methods),
                                                                          ("minutes", args.minutes),
                                                                          ("test_images", args.test_images)))},
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
