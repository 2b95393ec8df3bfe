"""``fieldforge train [DATA] --method M --out RUN``: train a method on a scene.

DATA may also be a folder of photographs or a video: it is processed first (``fieldforge
process`` with its defaults) into ``RUN/data``, which later runs and ``--resume`` reuse.

``--nproc N`` (or launching ``fieldforge train`` with ``torchrun --nproc-per-node N``) trains one
scene on N ranks with DistributedDataParallel (field methods): each rank draws batch / N rays,
gradients are averaged, rank 0 writes the run; see :mod:`fieldforge.apps.training.distributed`.
How flags become the run's configuration: :mod:`fieldforge.apps.training.launch`.
"""

from __future__ import annotations

import argparse
import functools

from fieldforge.apps.cli.view import add_live_arguments, viewer_options
from fieldforge.apps.process.pipeline import prepared
from fieldforge.apps.training.launch import TrainRequest, launch
from fieldforge.apps.viewer.session import live_viewer


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
    p.add_argument("--checkpoint-seconds", type=float, default=None, help="seconds between checkpoints (default 60)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1,
                   help="train on N local processes with DistributedDataParallel (field methods; same total batch)")
    add_live_arguments(p)


def request_from(args: argparse.Namespace) -> TrainRequest:
    """The request the command line makes."""
    return TrainRequest.given(data=args.data, method=args.method, out=args.out, steps=args.steps,
                              minutes=args.minutes, resume=args.resume, device=args.device, seed=args.seed,
                              format=args.format, downscale=args.downscale, overrides=tuple(args.overrides),
                              teacher=args.teacher, checkpoint_seconds=args.checkpoint_seconds, quiet=args.quiet,
                              nproc=args.nproc)


def run(args: argparse.Namespace) -> int:
    live = functools.partial(live_viewer, viewer_options(args)) if args.view else None
    return launch(request_from(args), prepare=prepared, live=live)
