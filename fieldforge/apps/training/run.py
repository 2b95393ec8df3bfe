"""Run directories: the one place a run's files live, and how to load a run back.

Layout of ``RUN/``::

    config.json              resolved TrainConfig + method config (re-loadable)
    checkpoints/last.pt      latest checkpoint, written atomically (weights_only-safe)
    logs/train.jsonl         one JSON object per logged step
    eval/<split>/metrics.json and <name>.png renders
    .lock                    while a process trains the run: its pid (:class:`RunLock`)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fieldforge.apps.training.checkpoint import load_method_state, load_safe
from fieldforge.apps.training.config import TrainConfig, from_dict, read_config
from fieldforge.errors import DataError, FieldforgeError
from fieldforge.scenes import Scene, load

REPO_ASSETS = Path(__file__).resolve().parents[2] / "assets" / "default-scene"


@dataclass
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "train.jsonl"

    def eval_dir(self, split: str) -> Path:
        return self.root / "eval" / split


LOCK_NAME = ".lock"


def is_run(path: Path) -> bool:
    """Whether ``path`` is a fieldforge run folder: its ``config.json`` was written by fieldforge."""
    try:
        return "fieldforge" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


class RunLock:
    """Hold ``RUN/.lock`` (created exclusively, holding this pid) while a process writes the
    run, so that a second process is refused on one line naming the holder; a lock left by a
    process that no longer exists is taken over. A run folder the lock created is removed again
    on release if nothing else was written into it. Use as a context manager."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_NAME
        self.held = self.created = False

    def __enter__(self) -> "RunLock":
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    holder = 0
                if holder and holder != os.getpid() and _alive(holder):
                    raise FieldforgeError(f"{self.path.parent}: run is in use by process {holder} "
                                          f"(its lock is {self.path})") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise FieldforgeError(f"{self.path}: cannot take the run's lock")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
            if self.created and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()


def default_scene_path() -> Path:
    """The bundled scene: ``assets/default-scene`` of a source checkout, else generated once
    into ``~/.cache/fieldforge/default-scene`` with the same generator and seed."""
    if (REPO_ASSETS / "transforms_train.json").is_file():
        return REPO_ASSETS
    cache = Path.home() / ".cache" / "fieldforge" / "default-scene"
    if not (cache / "transforms_train.json").is_file():
        from fieldforge.scenes.synthetic import generate

        generate(cache)
    return cache


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FieldforgeError(f"--device {name}: CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise FieldforgeError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


def load_scene(cfg: TrainConfig) -> Scene:
    path = Path(cfg.data) if cfg.data else default_scene_path()
    return load(path, format=cfg.format, downscale=cfg.downscale)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", with_checkpoint: bool = True):
    """Rebuild a trained run: returns ``(method, train_config, scene)`` with the method's
    state loaded from ``checkpoints/last.pt``, its plan's horizon applied, in eval mode."""
    from fieldforge.apps.training.methods import get_method

    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise DataError(run.root, "run directory not found")
    data = read_config(run.config)
    train = from_dict(TrainConfig, data["train"], run.config)
    cls = get_method(train.method)
    method_cfg = from_dict(cls.Config, data["method"], run.config)
    scene = load_scene(train)
    dev = resolve_device(str(device))
    method = cls(method_cfg, scene.split("train"), dev)
    if train.plan == "minutes" and train.horizon:
        method.plan(train.horizon)  # the schedules as the run last followed them
    if with_checkpoint:
        load_method_state(method, load_safe(run.checkpoint, map_location=dev), run.checkpoint)
    method.eval()
    return method, train, scene
