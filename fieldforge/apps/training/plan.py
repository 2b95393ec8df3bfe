"""Training plans: the number of steps every schedule of a method spans (its *horizon*).

A method's config states its recipe for ``steps`` steps, the horizon of its learning-rate decay.
Fields marked with :func:`phase` are positions in that recipe (GauFRe's warm-up and loss switch,
distillation steps); fields that are not marked are fixed counts: intervals (``refine_every``,
``grid_every``, ``reset_every``) and what a model needs a number of steps for whatever the run's
length (the README's time-budget measurements): the occupancy grid's full-update warm-up and
Gaussian densification's start and stop and SH degree steps (see :mod:`fieldforge.apps.training.methods.splat`). :func:`planned` rescales ``steps`` and the phase
fields to another horizon, so a recipe keeps its shape: a warm-up of a tenth of the run stays a
tenth of any run.

Two plans, chosen by ``fieldforge train``:

- ``steps`` (``--steps N``, or neither flag): the recipe as configured, ``steps`` = N;
- ``minutes`` (``--minutes M`` without ``--steps``): the horizon is the number of steps M minutes
  allow, estimated by :class:`BudgetPlanner` from the measured step times and revised every
  ``every`` steps; the recipe's phases follow the revised horizon, and its learning-rate decay
  does when the horizon is longer than the recipe (a shorter budget keeps the recipe's decay:
  :meth:`Method.plan`; a compressed decay cost quality). The
  planner's state is saved in the checkpoint (and the horizon in ``config.json``), so a resumed run follows the
  same plan, and resuming with a larger budget re-plans the horizon from the step rate exactly
  as a fresh run of that budget plans it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

PLANS = ("steps", "minutes")


def phase(default: int) -> Any:
    """A config field holding a step position of the recipe (rescaled by :func:`planned`)."""
    return dataclasses.field(default=default, metadata={"phase": True})


def phase_fields(cfg: Any) -> list[str]:
    """Names of the fields of ``cfg`` marked with :func:`phase`."""
    return [f.name for f in dataclasses.fields(cfg) if f.metadata.get("phase")]


def decayed(lr: float, final_factor: float, step: int, steps: int) -> float:
    """Exponential decay from ``lr`` at step 0 to ``lr * final_factor`` at ``steps`` (held after),
    the learning-rate schedule of every method's recipe."""
    return lr * final_factor ** (min(step, steps) / max(steps, 1))


def planned(cfg: Any, horizon: int) -> Any:
    """``cfg`` with ``steps = horizon`` and every phase field scaled by ``horizon / cfg.steps``
    (rounded; a positive position stays >= 1). ``cfg`` itself is the recipe and is not changed."""
    if horizon < 1:
        raise ValueError(f"planned: horizon must be >= 1, got {horizon}")
    base = max(int(cfg.steps), 1)
    scaled = {name: max(1, round(getattr(cfg, name) * horizon / base)) if getattr(cfg, name) > 0 else 0
              for name in phase_fields(cfg)}
    return dataclasses.replace(cfg, steps=int(horizon), **scaled)


class BudgetPlanner:
    """Estimates how many steps a budget of training seconds allows.

    The horizon is ``step + remaining seconds / seconds per step``, the rate measured over the
    last ``window`` revisions (recent steps: step times change as a method densifies or its grid
    sharpens); it never falls below ``step + 1``. Before any step is measured it is ``initial``.
    """

    def __init__(self, seconds: float, initial: int, every: int = 25, window: int = 4):
        if seconds <= 0:
            raise ValueError(f"BudgetPlanner: seconds must be > 0, got {seconds}")
        self.seconds, self.horizon, self.every, self.window = float(seconds), int(initial), int(every), int(window)
        self.marks: list[tuple[int, float]] = [(0, 0.0)]  # (step, training seconds) at each revision

    def estimate(self, step: int, train_seconds: float) -> int:
        """The horizon for a run at ``step`` after ``train_seconds`` (uses the recorded rate)."""
        s0, t0 = self.marks[max(0, len(self.marks) - 1 - self.window)]
        if step <= s0 or train_seconds <= t0:
            return max(self.horizon, step + 1)
        per_step = (train_seconds - t0) / (step - s0)
        return max(step + 1, step + int((self.seconds - train_seconds) / per_step))

    def revise(self, step: int, train_seconds: float) -> bool:
        """Record a mark every ``every`` steps and re-estimate; True when the horizon changed."""
        if step % self.every or step <= self.marks[-1][0]:
            return False
        self.marks.append((step, train_seconds))
        old, self.horizon = self.horizon, self.estimate(step, train_seconds)
        return self.horizon != old

    def extend(self, seconds: float, step: int, train_seconds: float) -> None:
        """A new budget (a resumed run's ``--minutes``): re-plan from the recorded rate."""
        self.seconds = float(seconds)
        self.horizon = self.estimate(step, train_seconds)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "horizon": self.horizon, "every": self.every, "window": self.window,
                "marks": [[s, t] for s, t in self.marks]}

    def load_state_dict(self, state: dict) -> None:
        self.seconds, self.horizon = float(state["seconds"]), int(state["horizon"])
        self.every, self.window = int(state["every"]), int(state["window"])
        self.marks = [(int(s), float(t)) for s, t in state["marks"]]
