"""``fieldforge distill TEACHER_RUN --method M --out RUN``: train field M from a trained field.

The student trains on the teacher's scene (same data folder, format and downscale) with the
teacher set: ``--distill-steps`` steps of regression onto the teacher's colour and alpha
(:mod:`fieldforge.apps.training.methods.teacher`), then image fine-tuning up to ``--steps``. The run is
an ordinary run directory: ``eval``, ``render``, ``export`` and ``train --resume`` work on it,
and it no longer needs the teacher once distillation is over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fieldforge.apps.api import train
from fieldforge.apps.training.config import TrainConfig, from_dict, read_config
from fieldforge.apps.training.run import RunDir, is_run
from fieldforge.errors import FieldforgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", help="run directory of a trained field method (a ray-marched one, e.g. ngp or nerf)")
    p.add_argument("--method", default="kilonerf", help="student method (default: kilonerf)")
    p.add_argument("--out", "-o", required=True, help="run directory of the student")
    p.add_argument("--steps", type=int, default=None, help="total steps: distillation + fine-tuning")
    p.add_argument("--distill-steps", type=int, default=None, help="distillation steps (default: the method's)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=None, help="seeds the global RNG and the method's generators (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a student option (repeatable)")
    p.add_argument("--checkpoint-seconds", type=float, default=None, help="seconds between checkpoints (default 60)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    rd = RunDir(Path(args.teacher))
    if not rd.root.is_dir():
        raise FieldforgeError(f"teacher {args.teacher}: run directory not found")
    if not is_run(rd.root):
        raise FieldforgeError(f"teacher {args.teacher}: not a fieldforge run (no config.json written by fieldforge)")
    t_cfg = from_dict(TrainConfig, read_config(rd.config)["train"], rd.config)
    overrides = list(args.overrides)
    if args.distill_steps is not None:
        if args.distill_steps < 1:
            raise FieldforgeError(f"--distill-steps must be >= 1, got {args.distill_steps}")
        overrides.append(f"distill_steps={args.distill_steps}")
    return train(t_cfg.data, method=args.method, out=args.out, steps=args.steps, minutes=args.minutes,
                 device=args.device, seed=args.seed, format=t_cfg.format, downscale=t_cfg.downscale,
                 overrides=overrides, teacher=args.teacher, checkpoint_seconds=args.checkpoint_seconds,
                 quiet=args.quiet).exit_code
