"""``fieldforge bench radiance``: train field methods on a scene under a wall-clock budget and
evaluate them at fixed training times.

For each method the run trains to the first budget, is evaluated on an evenly spaced subset of
the test split, resumes (exactly, from its checkpoint) to the next budget, and so on. Training
time is the trainer's ``train_seconds``: time inside training steps, occupancy-grid updates
included, checkpoint writing and evaluation excluded.

Methods listed in ``--distill`` (default kilonerf) are distilled from ``--teacher``: the name
of a method trained earlier in the same benchmark (its final run), or a run directory. Their
training time counts distillation and fine-tuning, not the teacher's training.

Prints one table and writes JSON::

    {"protocol": {...}, "rows": [{"method", "teacher", "minutes", "steps", "train_seconds", "psnr", "ssim",
                                  "num_images", "rays_per_second", "render_seconds_per_image",
                                  "params", "model_mb", "checkpoint_mb"}]}

``params`` counts the method's trainable parameters, ``model_mb`` their float32 size and
``checkpoint_mb`` the file ``checkpoints/last.pt`` (model, optimiser state, occupancy grid).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from fieldforge.apps.bench.runs import data_root, machine, parse_minutes, train_budget
from fieldforge.apps.training.evaluate import evaluate
from fieldforge.apps.training.run import RunDir
from fieldforge.errors import FieldforgeError

DEFAULT_SCENE = "nerf-synthetic-lego-200"  # in FIELDFORGE_DATA, when --data is not given


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help=f"dataset folder (default: $FIELDFORGE_DATA/{DEFAULT_SCENE})")
    p.add_argument("--methods", default="nerf,ngp,kilonerf,rbf,cam", help="comma-separated method names")
    p.add_argument("--distill", default="kilonerf", help="methods trained by distillation from --teacher")
    p.add_argument("--teacher", default="nerf", help="teacher: a method benchmarked earlier, or a run directory")
    p.add_argument("--minutes", default="2,5,10", help="comma-separated training times to evaluate at")
    p.add_argument("--test-images", type=int, default=25, help="evenly spaced test views per evaluation")
    p.add_argument("--downscale", type=int, default=1, help="downscale images by N on load (train and eval)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="method option override applied to every method (repeatable)")
    p.add_argument("--runs", default="benchmarks/runs/radiance", help="folder for the run directories")
    p.add_argument("--out", default="benchmarks/results/radiance_fields.json")
    p.add_argument("--device", default="cpu")


def _rays_per_second(run: RunDir) -> float | None:
    if not run.log.is_file():
        return None
    lines = [json.loads(s) for s in run.log.read_text().splitlines() if s.strip()]
    return lines[-1].get("rays_per_second") if lines else None


def _size(run_dir: Path, params: int) -> dict:
    return {"params": params, "model_mb": round(params * 4 / 2**20, 2),
            "checkpoint_mb": round(RunDir(run_dir).checkpoint.stat().st_size / 2**20, 2)}


def bench_method(name: str, data: str, minutes: list[float], test_images: int, runs: Path, device: str,
                 overrides: list[str], teacher: str | None = None, downscale: int = 1) -> tuple[list[dict], dict]:
    run_dir = runs / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    rows = []
    for m in minutes:  # the first budget starts the run, the next ones resume it
        train_budget(run_dir, data, name, minutes=m, device=device, overrides=overrides, downscale=downscale,
                     teacher=teacher)
        r = evaluate(run_dir, "test", test_images, device, write_images=False)
        rows.append({"method": name, "teacher": teacher, "minutes": m, "steps": r["steps"],
                     "train_seconds": round(r["train_seconds"], 1),
                     "psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4), "num_images": r["num_images"],
                     "rays_per_second": _rays_per_second(RunDir(run_dir)),
                     "render_seconds_per_image": round(r["render_seconds_per_image"], 3), **_size(run_dir, r["params"])})
        print(json.dumps(rows[-1]), flush=True)
        protocol = r["protocol"]
    return rows, protocol


def _teacher_run(teacher: str, methods: list[str], distilled: set[str], runs: Path) -> str | None:
    """The teacher's run directory: a method benchmarked before every distilled one, or a run path."""
    students = [m for m in methods if m in distilled]
    if not students:
        return None
    if teacher in methods:
        if methods.index(teacher) > min(methods.index(s) for s in students) or teacher in distilled:
            raise FieldforgeError(f"--teacher {teacher}: must be benchmarked before {', '.join(students)} "
                                  "and not be distilled itself")
        return str(runs / teacher)
    if not Path(teacher).is_dir():
        raise FieldforgeError(f"--teacher {teacher}: neither a method in --methods nor a run directory")
    return teacher


def run(args: argparse.Namespace) -> int:
    if args.data is None:
        if data_root() is None:
            raise FieldforgeError(f"pass --data, or set FIELDFORGE_DATA to the folder holding {DEFAULT_SCENE}")
        args.data = str(data_root() / DEFAULT_SCENE)
    if not Path(args.data).exists():
        raise FieldforgeError(f"{args.data}: dataset not found (pass --data)")
    minutes = parse_minutes(args.minutes)
    methods = [m for m in args.methods.split(",") if m]
    distilled = {m for m in args.distill.split(",") if m}
    teacher_run = _teacher_run(args.teacher, methods, distilled, Path(args.runs))
    rows, protocol = [], {}
    for name in methods:
        r, protocol = bench_method(name, args.data, minutes, args.test_images, Path(args.runs), args.device,
                                   args.overrides, teacher_run if name in distilled else None, args.downscale)
        rows += r
    print(f"\n{'method':<9} {'min':>5} {'steps':>6} {'PSNR':>7} {'SSIM':>6} {'rays/s':>8} {'render s/img':>12} "
          f"{'params':>10} {'ckpt MB':>8}")
    for r in rows:
        print(f"{r['method']:<9} {r['minutes']:>5g} {r['steps']:>6} {r['psnr']:>7.2f} {r['ssim']:>6.3f} "
              f"{r['rays_per_second'] or 0:>8,.0f} {r['render_seconds_per_image']:>12.3f} {r['params']:>10,} "
              f"{r['checkpoint_mb']:>8.1f}")
    result = {"protocol": {**protocol, "data": str(args.data), "minutes": minutes, "overrides": args.overrides,
                           "train_seconds": "time inside training steps (grid updates included; checkpoints and eval excluded)",
                           "machine": machine(), "command": "fieldforge bench radiance " + " ".join(
                               f"--{k.replace('_', '-')} {v}" for k, v in (("methods", args.methods),
                                                                          ("distill", args.distill),
                                                                          ("teacher", args.teacher),
                                                                          ("minutes", args.minutes),
                                                                          ("test_images", args.test_images),
                                                                          ("downscale", args.downscale)))},
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
