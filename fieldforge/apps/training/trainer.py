"""The training loop shared by every method: progress, logs, atomic checkpoints, exact resume.

Exact resume: a checkpoint holds the method state (model, optimisers, schedulers, its own
generators), the global torch RNG state, the step and the training seconds so far. Resuming
from the checkpoint of step k and training to N gives the same parameters as an
uninterrupted run to N (on the same device and torch build).

Plans (:mod:`fieldforge.apps.training.plan`): with ``cfg.plan == "minutes"`` the run has no step limit;
a :class:`~fieldforge.apps.training.plan.BudgetPlanner` estimates the steps the budget allows from the
measured step times and the method's schedules follow it (:meth:`Method.plan`); its state is part
of the checkpoint. Step times come from :data:`clock`.

Data-parallel (several ranks, :mod:`fieldforge.apps.training.distributed`): every rank runs this loop;
rank 0 alone writes the log, checkpoints and progress bar; the checkpoint also holds every
rank's own state (``"ranks"``); the checkpoint and minutes-budget decisions are rank 0's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm import tqdm

from fieldforge.apps.training import distributed
from fieldforge.apps.training.checkpoint import load_method_state, load_safe, save_atomic
from fieldforge.apps.training.config import TrainConfig
from fieldforge.apps.training.methods.base import Method
from fieldforge.apps.training.methods.teacher import load_teacher
from fieldforge.apps.training.plan import PLANS, BudgetPlanner
from fieldforge.apps.training.run import RunDir
from fieldforge.errors import FieldforgeError
from fieldforge.fields.base import Field

clock: Callable[[], float] = time.perf_counter  # measures step times (tests replace it)


def save_checkpoint(run: RunDir, method: Method, step: int, train_seconds: float,
                    planner: BudgetPlanner | None = None) -> None:
    """Rank 0 writes; with several ranks every rank must call it (it gathers their states)."""
    state = {"step": step, "train_seconds": train_seconds, "method_name": method.name, "method": method.state_dict(),
             "torch_rng": torch.get_rng_state()}
    if planner is not None:
        state["plan"] = planner.state_dict()
    if distributed.world_size() > 1:
        state["ranks"] = distributed.gather_rank_states(method)
    if distributed.is_main():
        try:
            save_atomic(state, run.checkpoint)
        except OSError as e:  # a full disk, no permission: the previous checkpoint is intact
            kept = f"the checkpoint of step {_ckpt_step(run)} is kept" if run.checkpoint.is_file() else \
                "no checkpoint was written"
            raise FieldforgeError(f"{run.checkpoint}: cannot write the checkpoint of step {step} "
                                  f"({e.strerror or e}); {kept}") from None


def restore_checkpoint(run: RunDir, method: Method, planner: BudgetPlanner | None = None) -> tuple[int, float]:
    state = load_safe(run.checkpoint, map_location=method.device)
    load_method_state(method, state, run.checkpoint)
    torch.set_rng_state(state["torch_rng"].cpu())
    distributed.load_rank_states(method, state.get("ranks"))
    if planner is not None:
        if "plan" not in state:
            raise FieldforgeError(f"{run.checkpoint}: this run was not planned for a time budget (no plan saved)")
        planner.load_state_dict(state["plan"])
    return int(state["step"]), float(state["train_seconds"])


def make_planner(cfg: TrainConfig, method: Method) -> BudgetPlanner | None:
    """The budget planner of a ``minutes`` plan (None for a ``steps`` plan)."""
    if cfg.plan not in PLANS:
        raise FieldforgeError(f"train.plan must be one of {', '.join(PLANS)}, got {cfg.plan!r}")
    if cfg.plan != "minutes":
        return None
    if cfg.minutes is None or cfg.minutes <= 0:
        raise FieldforgeError(f"a time-budget plan needs --minutes > 0, got {cfg.minutes}")
    return BudgetPlanner(cfg.minutes * 60.0, method.recipe.steps)


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While the block runs (in the main thread), SIGINT and SIGTERM only record their number in
    the yielded list, which the training loop checks between steps (it then writes its final
    checkpoint and stops); a second signal interrupts at once."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(method: Method, run: RunDir, cfg: TrainConfig, total_steps: int | None, resume: bool = False,
          quiet: bool = False, on_step: Callable[[int, Method], None] | None = None,
          teacher: Field | None = None) -> dict:
    """Train ``method`` up to ``total_steps`` (the run's total; None: until the minutes budget is
    spent). Returns a summary dict (with "horizon" under a minutes plan). ``on_step(step, method)``
    runs after each step (``step`` = steps done); it may block (the live viewer's pause), which
    does not count as training time. SIGINT or SIGTERM stop the run between two steps with a
    final checkpoint (:func:`stop_signals`); the summary then names the signal ("stopped_by")
    and holds its number ("signal"). A method that still distils (:meth:`Method.teacher_run`) is
    handed its teacher's field: ``teacher`` when the caller loaded it, else loaded here, once."""
    start, train_seconds = 0, 0.0
    planner = make_planner(cfg, method)
    if resume and run.checkpoint.is_file():
        start, train_seconds = restore_checkpoint(run, method, planner)
    elif resume:
        raise FieldforgeError(f"{run.checkpoint}: nothing to resume (no checkpoint)")
    if planner is not None:
        if planner.seconds != cfg.minutes * 60.0:  # resumed with another budget: re-plan its horizon
            planner.extend(cfg.minutes * 60.0, start, train_seconds)
        method.plan(planner.horizon)
    if teacher_run := method.teacher_run(start):
        method.set_teacher(teacher if teacher is not None else load_teacher(teacher_run, method.device)[0])
    run.log.parent.mkdir(parents=True, exist_ok=True)
    method.train()
    last_ckpt = clock()
    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    step = start
    rays_total, t_loop = 0.0, clock()
    bar = tqdm(total=total_steps, initial=start, disable=quiet or not distributed.is_main(), dynamic_ncols=True,
               desc=f"train {method.name}")
    stopped = "steps"
    with run.log.open("a") if distributed.is_main() else open(os.devnull, "w") as log, stop_signals() as received:
        while total_steps is None or step < total_steps:
            stop = distributed.agree_int(1 if received else 2 if budget is not None and train_seconds >= budget else 0)
            if stop:  # rank 0 decides, one broadcast: 1 = a signal arrived, 2 = the budget is spent
                stopped = "minutes" if stop == 2 else signal.Signals(received[0]).name if received else "signal"
                break
            t0 = clock()
            metrics = method.train_step(step)
            dt = clock() - t0
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                bar.close()
                kept = (f"the last good checkpoint (step {_ckpt_step(run)}) is kept" if run.checkpoint.is_file()
                        else "no checkpoint had been written yet")
                raise FieldforgeError(f"loss became {loss} at step {step}: training stopped; {kept} in {run.checkpoint}")
            train_seconds += dt
            step += 1
            rays_total += float(metrics.get("rays", 0.0))
            bar.update(1)
            if planner is not None and planner.revise(step, train_seconds):
                planner.horizon = distributed.agree_int(planner.horizon)  # rank 0's clock decides
                method.plan(planner.horizon)
            if step % cfg.log_every == 0 or step == total_steps:
                rps = rays_total / max(clock() - t_loop, 1e-9)
                post = {"loss": f"{loss:.4f}", "rays/s": f"{rps:,.0f}"}
                if "psnr" in metrics:
                    post["psnr"] = f"{metrics['psnr']:.2f}"
                bar.set_postfix(post, refresh=False)
                log.write(json.dumps({"step": step, "train_seconds": round(train_seconds, 3), "rays_per_second": rps,
                                      **{k: float(v) for k, v in metrics.items()}}) + "\n")
                log.flush()
            if distributed.agree(clock() - last_ckpt >= cfg.checkpoint_seconds):
                save_checkpoint(run, method, step, train_seconds, planner)
                last_ckpt = clock()
            if on_step is not None:
                on_step(step, method)
    bar.close()
    if stopped == "minutes" and step - start <= 1 and distributed.is_main():
        print(f"warning: the {cfg.minutes:g}-minute budget was spent by {step - start} step(s) "
              f"({train_seconds:.1f} s of training): give more --minutes", file=sys.stderr)
    save_checkpoint(run, method, step, train_seconds, planner)
    summary = {"step": step, "train_seconds": train_seconds, "stopped_by": stopped}
    if received:
        summary["signal"] = received[0]
    return summary if planner is None else {**summary, "horizon": planner.horizon}


def _ckpt_step(run: RunDir) -> int:
    return int(load_safe(run.checkpoint)["step"])
