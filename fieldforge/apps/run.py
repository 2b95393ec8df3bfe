"""Run directories: the one place a run's files live, and how to load a run back.

Layout of ``RUN/``::

    config.json              resolved TrainConfig + method config (re-loadable)
    checkpoints/last.pt      latest checkpoint, written atomically (weights_only-safe)
    logs/train.jsonl         one JSON object per logged step
    eval/<split>/metrics.json and <name>.png renders
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fieldforge.apps.checkpoint import load_safe
from fieldforge.apps.config import TrainConfig, from_dict, read_config
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
    from fieldforge.apps.methods import get_method

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
        state = load_safe(run.checkpoint, map_location=dev)
        if "method" not in state:
            raise DataError(run.checkpoint, "checkpoint has no 'method' state")
        method.load_state_dict(state["method"])
    method.eval()
    return method, train, scene
