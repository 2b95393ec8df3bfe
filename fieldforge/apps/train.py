"""``fieldforge train [DATA] --method M --out RUN``: train a method on a scene.

DATA may also be a folder of photographs or a video: it is processed first (``fieldforge
process`` with its defaults) into ``RUN/data``, which later runs and ``--resume`` reuse.

``--nproc N`` (or launching ``fieldforge train`` with ``torchrun --nproc-per-node N``) trains one
scene on N ranks with DistributedDataParallel (field methods): each rank draws batch / N rays,
gradients are averaged, rank 0 writes the run; see :mod:`fieldforge.apps.distributed`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from fieldforge.apps import distributed
from fieldforge.apps.config import TrainConfig, apply_overrides, from_dict, read_config, save_config
from fieldforge.apps.methods import get_method
from fieldforge.apps.methods.teacher import Teacher
from fieldforge.apps.run import LOCK_NAME, RunDir, RunLock, is_run, load_scene, resolve_device
from fieldforge.apps.trainer import train
from fieldforge.apps.viewer import add_live_arguments, live_viewer
from fieldforge.errors import FieldforgeError

DEFAULT_METHOD = "ngp"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", default=None, help="dataset folder (default: the bundled scene)")
    p.add_argument("--method", default=None, help="method name (nerf, ngp, splat, ...; default ngp)")
    p.add_argument("--out", "-o", default=None, help="run directory (default: runs/<method>)")
    p.add_argument("--steps", type=int, default=None, help="total steps of the run (resume continues to it)")
    p.add_argument("--minutes", type=float, default=None,
                   help="training time budget; without --steps every schedule is planned to fit it")
    p.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=None, help="seeds the global RNG and the method's generators (default 0)")
    p.add_argument("--format", default=None, help="force the dataset format")
    p.add_argument("--downscale", type=int, default=None, help="downscale images by N on load (default 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method option (repeatable); see config.json of a run")
    p.add_argument("--teacher", default=None, metavar="RUN",
                   help="distil from this trained field run first (field methods; see `fieldforge distill`)")
    p.add_argument("--checkpoint-seconds", type=float, default=60.0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1,
                   help="train on N local processes with DistributedDataParallel (field methods; same total batch)")
    add_live_arguments(p)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/{args.method or DEFAULT_METHOD}")
    args.out = str(out)
    if not args.resume:
        check_new_run(out)
    with RunLock(out) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
        if not args.resume and args.data:
            args.data = str(_processed(Path(args.data), out))
        return distributed.run_ranks(args.nproc, _run_rank, args)


def check_new_run(out: Path) -> None:
    """A new run goes into a missing or empty folder, or a fieldforge run folder (one whose
    ``config.json`` fieldforge wrote; its checkpoint is checked later), or one holding only the
    ``data`` a previous ``train PHOTOS`` processed into it; never into a user's other folder."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FieldforgeError(f"{out}: exists and is not a folder")
    entries = {p.name for p in out.iterdir()} - {LOCK_NAME}
    if not entries or entries == {"data"} and (out / "data" / "transforms.json").is_file() or is_run(out):
        return
    raise FieldforgeError(f"{out}: folder exists and is not a fieldforge run; choose another --out")


def _check_resume_flags(args: argparse.Namespace, cfg: TrainConfig, out: Path) -> None:
    """``--resume`` continues a run as it was configured: flags that would change it are refused."""
    given = {"--method": (args.method, cfg.method), "--downscale": (args.downscale, cfg.downscale),
             "--format": (args.format, cfg.format), "--seed": (args.seed, cfg.seed)}
    for flag, (value, recorded) in given.items():
        if value is not None and value != recorded:
            raise FieldforgeError(f"{out}: --resume continues the run as configured ({flag} {recorded}); "
                                  f"{flag} {value} would change it")
    own = "the bundled scene" if cfg.data is None else cfg.data
    if args.data and (cfg.data is None or Path(args.data).resolve() != Path(cfg.data).resolve() and
                      Path(cfg.data).resolve() != (out / "data").resolve()):
        raise FieldforgeError(f"{out}: --resume continues the run on its own data ({own}), not {args.data}")
    if args.overrides or getattr(args, "teacher", None):
        raise FieldforgeError(f"{out}: --set and --teacher cannot change a run being resumed; start a new run")


def _processed(data: Path, out: Path) -> Path:
    """``data`` itself, or for photographs or a video the posed dataset ``out/data`` made from
    them by ``fieldforge process`` (reused when a previous run made it)."""
    from fieldforge.apps.process import is_photos, process_default

    if not is_photos(data):
        return data
    posed = out / "data"
    if (posed / "transforms.json").is_file():
        print(f"reusing {posed} (processed from {data})")
        return posed
    process_default(data, posed)  # nothing is left when the photos do not register (the run lock removes RUN)
    return posed


def _run_rank(args: argparse.Namespace) -> int:
    """Train as this process's rank (the only one without --nproc / torchrun)."""
    out = Path(args.out)
    rd = RunDir(out)
    if args.steps is not None and args.steps < 1:
        raise FieldforgeError(f"--steps must be >= 1, got {args.steps}")
    if args.minutes is not None and not args.minutes > 0:
        raise FieldforgeError(f"--minutes must be > 0, got {args.minutes}")
    if args.resume:
        data = read_config(rd.config)
        cfg = from_dict(TrainConfig, data["train"], rd.config)
        _check_resume_flags(args, cfg, out)
        cls = get_method(cfg.method)
        method_cfg = from_dict(cls.Config, data["method"], rd.config)
        if cfg.plan == "minutes":
            if args.steps is not None:
                raise FieldforgeError(f"{out}: this run is planned for a time budget; resume it with --minutes, "
                                      "not --steps")
            cfg = dataclasses.replace(cfg, minutes=args.minutes or cfg.minutes)
        else:
            steps = args.steps or cfg.steps
            cfg = dataclasses.replace(cfg, steps=steps, minutes=args.minutes)
            method_cfg = dataclasses.replace(method_cfg, steps=steps)  # schedules span the new total
    else:
        if rd.checkpoint.is_file():
            raise FieldforgeError(f"{out}: run already exists; use --resume to continue it or choose another --out")
        args.method = args.method or DEFAULT_METHOD
        args.seed = 0 if args.seed is None else args.seed
        args.downscale = 1 if args.downscale is None else args.downscale
        cls = get_method(args.method)
        method_cfg = dataclasses.replace(apply_overrides(cls.Config(), args.overrides), seed=args.seed)
        if getattr(args, "teacher", None):
            if not hasattr(method_cfg, "teacher"):
                raise FieldforgeError(f"--teacher: method {args.method!r} does not train by distillation")
            method_cfg = dataclasses.replace(method_cfg, teacher=args.teacher)
        if getattr(method_cfg, "teacher", ""):
            Teacher.check(method_cfg.teacher)
            method_cfg = dataclasses.replace(method_cfg, teacher=str(Path(method_cfg.teacher).resolve()))
            if hasattr(method_cfg, "bounds") and not method_cfg.bounds:
                bounds = tuple(round(v, 4) for v in Teacher.occupied_bounds(method_cfg.teacher))
                method_cfg = dataclasses.replace(method_cfg, bounds=bounds)
        plan = "minutes" if args.minutes is not None and args.steps is None else "steps"
        if args.steps is not None:
            method_cfg = dataclasses.replace(method_cfg, steps=args.steps)  # schedules span the run
        cfg = TrainConfig(data=args.data, format=args.format, method=args.method, steps=args.steps,
                          minutes=args.minutes, plan=plan, seed=args.seed, device=args.device,
                          downscale=args.downscale, checkpoint_seconds=args.checkpoint_seconds)
    total = None if cfg.plan == "minutes" else cfg.steps or method_cfg.steps
    cfg = dataclasses.replace(cfg, steps=total)
    torch.manual_seed(cfg.seed)
    scene = load_scene(cfg)
    device = resolve_device(cfg.device)
    method = cls(method_cfg, scene.split("train"), device)
    distributed.replicate(method)  # a collective: all ranks have read config.json before rank 0 rewrites it
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_config(rd.config, cfg, method_cfg)
    with live_viewer(args, method, scene, rd) if distributed.is_main() else contextlib.nullcontext() as on_step:
        summary = train(method, rd, cfg, total, resume=args.resume, quiet=args.quiet, on_step=on_step)
    if distributed.is_main():
        if "horizon" in summary:  # the plan as it stood when the run stopped
            save_config(rd.config, dataclasses.replace(cfg, horizon=summary["horizon"]), method_cfg)
        print(json.dumps({"run": str(out), **summary}))
        if "signal" in summary:
            print(f"fieldforge train: stopped by {summary['stopped_by']} at step {summary['step']}; the checkpoint "
                  f"is saved in {rd.checkpoint} (continue with --resume)", file=sys.stderr)
    return 128 + summary["signal"] if "signal" in summary else 0
