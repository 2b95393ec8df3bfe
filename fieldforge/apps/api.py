"""Library API: train, load, evaluate and render runs from Python.

    import fieldforge

    run = fieldforge.train("data/lego", method="splat", out="runs/lego", minutes=10)
    print(run.evaluate(max_images=20)["psnr"])
    image = run.render(run.scene.split("test").cameras[0])["rgb"]  # [H, W, 3] in [0, 1]

:func:`train` is the ``fieldforge train`` verb with keyword arguments: the same request
(:class:`~fieldforge.apps.training.launch.TrainRequest`), validation, run folder, lock, plan,
checkpoints and one-line errors (:class:`~fieldforge.errors.FieldforgeError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fieldforge.apps.training.launch import TrainRequest, launch
from fieldforge.apps.training.run import is_run
from fieldforge.errors import DataError
from fieldforge.scenes import Cameras, Scene, background_rgb


def _text(value: Any) -> str:
    """A ``--set`` value as the config parser reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclass
class Run:
    """A trained run folder; :attr:`method`, :attr:`config` and :attr:`scene` load on first use."""

    path: Path
    device: str = "auto"
    exit_code: int = 0  # of the training that made it: 0, or 128 + the signal that stopped it
    _loaded: tuple | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "Run":
        """The run at ``path``; a folder that is not a fieldforge run is refused."""
        path = Path(path)
        if not is_run(path):
            raise DataError(path, "not a fieldforge run (no config.json written by fieldforge)")
        return cls(path, device)

    def _load(self) -> tuple:
        if self._loaded is None:
            from fieldforge.apps.training.run import load_run

            self._loaded = load_run(self.path, self.device)
        return self._loaded

    @property
    def method(self):
        """The trained method, in eval mode."""
        return self._load()[0]

    @property
    def config(self):
        """The run's :class:`~fieldforge.apps.training.config.TrainConfig`."""
        return self._load()[1]

    @property
    def scene(self) -> Scene:
        """The scene the run trained on (every split)."""
        return self._load()[2]

    def evaluate(self, split: str = "test", max_images: int | None = None, write_images: bool = True) -> dict:
        """``fieldforge eval``: metrics of ``split`` (written to ``RUN/eval/<split>``)."""
        from fieldforge.apps.training.evaluate import evaluate

        return evaluate(self.path, split, max_images, self.device, write_images)

    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor | None = None) -> dict[str, Tensor]:
        """Render camera 0 of ``cameras``: "rgb" [H, W, 3], "depth", "opacity" [H, W, 1], extras;
        the background defaults to the scene's."""
        method = self.method
        bg = background_rgb(self.scene.background) if background is None else background
        return method.render(cameras.to(method.device), bg.to(method.device))


def train(data: str | Path | None = None, *, method: str | None = None, out: str | Path | None = None,
          minutes: float | None = None, steps: int | None = None, seed: int | None = None,
          downscale: int | None = None, overrides: dict[str, Any] | Sequence[str] | None = None,
          teacher: str | Path | None = None, format: str | None = None, device: str = "auto",
          checkpoint_seconds: float | None = None, resume: bool = False, quiet: bool = True) -> Run:
    """Train (or with ``resume`` continue) a run, as ``fieldforge train`` does, and return it.

    ``data``: a dataset folder, photographs or a video (None: the bundled scene); ``method``
    (default ngp); ``out`` (default ``runs/<method>``); ``minutes`` without ``steps`` plans the
    schedules for that budget; ``overrides`` are method options (``--set``): a dict, or
    "key=value" strings as on the command line.
    """
    from fieldforge.apps.process.pipeline import prepared

    pairs = [f"{k}={_text(v)}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(overrides or ())
    request = TrainRequest.given(data=None if data is None else str(data), method=method,
                                 out=None if out is None else str(out), steps=steps, minutes=minutes, resume=resume,
                                 device=device, seed=seed, format=format, downscale=downscale, overrides=tuple(pairs),
                                 teacher=None if teacher is None else str(teacher),
                                 checkpoint_seconds=checkpoint_seconds, quiet=quiet)
    code = launch(request, prepare=prepared)
    run = Run(request.run_dir, device)
    run.exit_code = code
    return run
