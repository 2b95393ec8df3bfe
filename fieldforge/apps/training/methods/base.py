"""The Method seam: a registered training recipe that the trainer, eval, render, viewer,
export and benchmark use through one interface.

A method owns its model(s), optimisers and schedulers. The trainer only calls:

- ``Method(config, scene, device)``: build from a typed config dataclass and the *train* scene;
- ``train_step(step) -> dict``: one optimisation step (forward, backward, optimiser and
  scheduler step, densification, ...). Must contain "loss" (float); may contain "psnr",
  "rays" (rays or pixels processed, for rays/s) and anything else worth logging;
- ``render(cameras, background) -> dict``: render camera 0 of ``cameras`` at its size;
  returns "rgb" [H, W, 3], "depth" [H, W, 1], "opacity" [H, W, 1] and any extra channels;
  ``depth_kind`` (class attribute) says what "depth" is: "ray" = distance along the unit ray
  (ray marchers), "z" = camera-space z (rasterizers);
- ``state_dict()`` / ``load_state_dict()``: everything needed to continue training exactly
  (model, optimisers, schedulers, method RNG). Tensors, numbers, strings, lists and dicts
  only, so checkpoints load with ``torch.load(weights_only=True)``.

Plans (:mod:`fieldforge.apps.training.plan`): ``config`` is the recipe for ``config.steps`` steps and
stays available as ``recipe``; :meth:`Method.plan` makes the schedules span a longer horizon (its
``config`` becomes :func:`~fieldforge.apps.training.plan.planned` of the recipe, and :meth:`on_plan` updates
anything built from it). ``config.seed`` seeds the method's own generators.

What callers may read of any method (declared here, overridden by the methods that have them):
``train_cameras`` (the training scene's cameras on the method's device), ``radiance_field``
(the :class:`~fieldforge.fields.base.Field` it renders, or None), ``gaussians`` (its
:class:`~fieldforge.fields.gaussians.GaussianModel`, or None), ``depth_kind`` and
``supports_distributed``: with it, ``train --nproc`` (:mod:`fieldforge.apps.training.distributed`) calls
``distribute()`` to switch the method to data-parallel, and ``rank_state()`` /
``load_rank_state()`` save and restore a rank's own state (its ray generator).

Adding a method: subclass, set ``name`` and ``Config``, and list it in
:data:`fieldforge.apps.training.methods.registry.BUILTIN` (or another package's ``fieldforge.methods``
entry point).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fieldforge.apps.training.plan import planned
from fieldforge.fields.base import Field
from fieldforge.fields.gaussians import GaussianModel
from fieldforge.scenes import Cameras, Scene

@dataclasses.dataclass
class MethodConfig:
    """Base for method configs; subclasses add typed fields with defaults and mark the step
    positions of their recipe with :func:`~fieldforge.apps.training.plan.phase`."""

    seed: int = 0  # seeds the method's generators (rays, backgrounds, initial points); ``train --seed``
    steps: int = 1000  # the recipe's length: the horizon of its schedules


class Method(nn.Module):
    name: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    depth_kind: ClassVar[str] = "ray"  # "ray": distance along the unit ray; "z": camera-space z
    supports_distributed: ClassVar[bool] = False
    distils: ClassVar[bool] = False  # its config's ``teacher`` names a trained field run to distil from first

    def __init__(self, config: Any, scene: Scene | None, device: torch.device):
        super().__init__()
        self.config = self.recipe = config
        self.device = device
        self.train_cameras: Cameras | None = None if scene is None else scene.cameras.to(device)

    @property
    def radiance_field(self) -> Field | None:
        """The field this method renders by ray marching (None for other methods)."""
        return None

    @property
    def gaussians(self) -> GaussianModel | None:
        """The Gaussians this method rasterizes (None for other methods)."""
        return None

    @classmethod
    def with_teacher(cls, config: Any, run: str, occupied: list[float]) -> Any:
        """``config`` set to distil from the field run ``run`` (an absolute path) whose occupied
        cells span the box ``occupied`` [xmin, ymin, zmin, xmax, ymax, zmax] (methods that
        :attr:`distils`)."""
        raise NotImplementedError(f"method {cls.name!r} does not distil from a teacher")

    def teacher_run(self, step: int) -> str:
        """The run whose field this method still distils from at ``step`` ("" for none); the
        trainer loads that field once and hands it over with :meth:`set_teacher`."""
        return ""

    def set_teacher(self, field: Field) -> None:
        """Distil from ``field``, a frozen trained field, while :meth:`teacher_run` names one."""
        raise NotImplementedError(f"method {self.name!r} does not distil from a teacher")

    def plan(self, horizon: int) -> None:
        """Follow a plan of ``horizon`` steps: the recipe's phases are rescaled to it, and its
        learning-rate decay spans it when that is longer than the recipe (a shorter budget keeps
        the recipe's decay, cut short: compressing it cost quality, see the README's time-budget
        measurements)."""
        cfg = planned(self.recipe, int(horizon))
        self.config = dataclasses.replace(cfg, steps=max(int(horizon), int(self.recipe.steps)))
        self.on_plan()

    def on_plan(self) -> None:
        """Update what was built from ``config`` after :meth:`plan` (default: nothing)."""

    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
