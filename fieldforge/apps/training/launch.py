"""Starting and resuming a training run: a :class:`TrainRequest` (what ``fieldforge train`` and
``fieldforge.train`` are asked) becomes the run's configuration, checked and written once to
``RUN/config.json``; then every rank trains (:mod:`fieldforge.apps.training.distributed`).

This is the one place where a run's steps, schedule horizon, plan and seed are decided:

- a new run: ``method`` (default ngp), ``seed`` (default 0, given to the method's generators as
  well as the global torch RNG) and ``downscale`` (default 1); with ``minutes`` and no ``steps``
  the schedules are planned for the budget (``plan = "minutes"``), otherwise they span ``steps``
  (default: the method's recipe);
- a resumed run continues as configured: flags that would change it are refused, a larger
  ``steps`` stretches the schedules as a fresh run of that length would, and a budget run takes
  a new ``minutes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fieldforge.apps.training import distributed
from fieldforge.apps.training.config import TrainConfig, apply_overrides, from_dict, read_config, save_config
from fieldforge.apps.training.methods import Method, get_method
from fieldforge.apps.training.methods.teacher import load_teacher, occupied_bounds
from fieldforge.apps.training.run import LOCK_NAME, RunDir, RunLock, is_run, load_scene, resolve_device
from fieldforge.apps.training.trainer import train
from fieldforge.errors import FieldforgeError
from fieldforge.fields.base import Field
from fieldforge.scenes import Scene

DEFAULT_METHOD = "ngp"

Live = Callable[[Method, Scene, RunDir], AbstractContextManager]
"""A live viewer: given the method, scene and run, a context that yields the trainer's ``on_step``."""


@dataclass(frozen=True)
class TrainRequest:
    """What a user asks of ``fieldforge train``; None means "the default" for a new run and "as
    configured" for a resumed one. ``data`` None is the bundled scene; ``overrides`` are method
    options as "key=value" strings; ``nproc`` > 1 trains on that many local processes."""

    data: str | None = None
    method: str | None = None
    out: str | None = None
    steps: int | None = None
    minutes: float | None = None
    resume: bool = False
    device: str = "auto"
    seed: int | None = None
    format: str | None = None
    downscale: int | None = None
    overrides: tuple[str, ...] = ()
    teacher: str | None = None
    checkpoint_seconds: float = 60.0
    quiet: bool = False
    nproc: int = 1

    @classmethod
    def given(cls, **options: Any) -> TrainRequest:
        """The request of the options given; None means not given (the default above)."""
        return cls(**{k: v for k, v in options.items() if v is not None})

    @property
    def run_dir(self) -> Path:
        """The run folder: ``out``, by default ``runs/<method>``."""
        return Path(self.out or f"runs/{self.method or DEFAULT_METHOD}")


def launch(request: TrainRequest, prepare: Callable[[Path, Path], Path] | None = None, live: Live | None = None) -> int:
    """Train the run ``request`` describes; the exit code (0, or 128 + the signal that stopped it).

    ``prepare(data, out)`` turns the data of a new run into a dataset folder (photographs are
    processed into ``out/data``); ``live`` is a live viewer (on rank 0). The run folder is locked
    while it trains.
    """
    out = request.run_dir
    request = dataclasses.replace(request, out=str(out))
    if not request.resume:
        check_new_run(out)
    with RunLock(out) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
        if not request.resume and request.data and prepare is not None:
            request = dataclasses.replace(request, data=str(prepare(Path(request.data), out)))
        return distributed.run_ranks(request.nproc, run_rank, request, live)


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


def _check_resume_flags(request: TrainRequest, cfg: TrainConfig, out: Path) -> None:
    """``--resume`` continues a run as it was configured: flags that would change it are refused."""
    given = {"--method": (request.method, cfg.method), "--downscale": (request.downscale, cfg.downscale),
             "--format": (request.format, cfg.format), "--seed": (request.seed, cfg.seed)}
    for flag, (value, recorded) in given.items():
        if value is not None and value != recorded:
            raise FieldforgeError(f"{out}: --resume continues the run as configured ({flag} {recorded}); "
                                  f"{flag} {value} would change it")
    own = "the bundled scene" if cfg.data is None else cfg.data
    if request.data and (cfg.data is None or Path(request.data).resolve() != Path(cfg.data).resolve() and
                      Path(cfg.data).resolve() != (out / "data").resolve()):
        raise FieldforgeError(f"{out}: --resume continues the run on its own data ({own}), not {request.data}")
    if request.overrides or request.teacher:
        raise FieldforgeError(f"{out}: --set and --teacher cannot change a run being resumed; start a new run")


def configure(request: TrainRequest, rd: RunDir) -> tuple[TrainConfig, type[Method], Any, Field | None]:
    """The run's configuration, its method class, the method's configuration and, for a new run
    that distils, the teacher's field (the rules are in the module docstring)."""
    teacher = None
    if request.steps is not None and request.steps < 1:
        raise FieldforgeError(f"--steps must be >= 1, got {request.steps}")
    if request.minutes is not None and not request.minutes > 0:
        raise FieldforgeError(f"--minutes must be > 0, got {request.minutes}")
    if request.resume:
        data = read_config(rd.config)
        cfg = from_dict(TrainConfig, data["train"], rd.config)
        _check_resume_flags(request, cfg, rd.root)
        cls = get_method(cfg.method)
        method_cfg = from_dict(cls.Config, data["method"], rd.config)
        if cfg.plan == "minutes":
            if request.steps is not None:
                raise FieldforgeError(f"{rd.root}: this run is planned for a time budget; resume it with --minutes, "
                                      "not --steps")
            cfg = dataclasses.replace(cfg, minutes=request.minutes or cfg.minutes)
        else:
            steps = request.steps or cfg.steps
            cfg = dataclasses.replace(cfg, steps=steps, minutes=request.minutes)
            method_cfg = dataclasses.replace(method_cfg, steps=steps)  # schedules span the new total
    else:
        if rd.checkpoint.is_file():
            raise FieldforgeError(f"{rd.root}: run already exists; use --resume to continue it or choose another --out")
        request = dataclasses.replace(request, method=request.method or DEFAULT_METHOD,
                                      seed=0 if request.seed is None else request.seed,
                                      downscale=1 if request.downscale is None else request.downscale)
        cls = get_method(request.method)
        method_cfg = dataclasses.replace(apply_overrides(cls.Config(), request.overrides), seed=request.seed)
        if request.teacher and not cls.distils:
            raise FieldforgeError(f"--teacher: method {request.method!r} does not train by distillation")
        run = request.teacher or (method_cfg.teacher if cls.distils else "")
        if run:  # loaded once here, handed to the method by the trainer
            path = str(Path(run).resolve())
            teacher, grid = load_teacher(path, resolve_device(request.device))
            method_cfg = cls.with_teacher(method_cfg, path, occupied_bounds(grid))
        plan = "minutes" if request.minutes is not None and request.steps is None else "steps"
        if request.steps is not None:
            method_cfg = dataclasses.replace(method_cfg, steps=request.steps)  # schedules span the run
        cfg = TrainConfig(data=request.data, format=request.format, method=request.method, steps=request.steps,
                          minutes=request.minutes, plan=plan, seed=request.seed, device=request.device,
                          downscale=request.downscale, checkpoint_seconds=request.checkpoint_seconds)
    total = None if cfg.plan == "minutes" else cfg.steps or method_cfg.steps  # None: the planner decides
    return dataclasses.replace(cfg, steps=total), cls, method_cfg, teacher


def run_rank(request: TrainRequest, live: Live | None = None) -> int:
    """Train as this process's rank (the only one without ``nproc`` > 1 or torchrun)."""
    out = Path(request.out)
    rd = RunDir(out)
    cfg, cls, method_cfg, teacher = configure(request, rd)
    torch.manual_seed(cfg.seed)
    scene = load_scene(cfg)
    device = resolve_device(cfg.device)
    method = cls(method_cfg, scene.split("train"), device)
    distributed.replicate(method)  # a collective: all ranks have read config.json before rank 0 rewrites it
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_config(rd.config, cfg, method_cfg)
    live_here = live is not None and distributed.is_main()
    with live(method, scene, rd) if live_here else contextlib.nullcontext() as on_step:
        summary = train(method, rd, cfg, cfg.steps, resume=request.resume, quiet=request.quiet, on_step=on_step,
                        teacher=teacher)
    if distributed.is_main():
        if "horizon" in summary:  # the plan as it stood when the run stopped
            save_config(rd.config, dataclasses.replace(cfg, horizon=summary["horizon"]), method_cfg)
        print(json.dumps({"run": str(out), **summary}))
        if "signal" in summary:
            print(f"fieldforge train: stopped by {summary['stopped_by']} at step {summary['step']}; the checkpoint "
                  f"is saved in {rd.checkpoint} (continue with --resume)", file=sys.stderr)
    return 128 + summary["signal"] if "signal" in summary else 0
