"""The library API: ``fieldforge.train`` runs the train verb and returns a :class:`Run` that loads,
evaluates and renders like the CLI does."""

from __future__ import annotations

import json

import pytest
import torch

import fieldforge
from fieldforge.apps.training.run import RunDir
from fieldforge.errors import DataError, FieldforgeError


def test_train_evaluate_render_and_resume(tmp_path):
    out = tmp_path / "run"
    run = fieldforge.train(method="ngp", out=out, steps=3, downscale=4, seed=5,
                           overrides={"n_levels": 2, "log2_hashmap_size": 10, "grid_resolution": 16})
    assert isinstance(run, fieldforge.Run) and run.path == out
    cfg = json.loads(RunDir(out).config.read_text())
    assert cfg["train"]["seed"] == 5 and cfg["train"]["downscale"] == 4 and cfg["method"]["n_levels"] == 2
    metrics = fieldforge.Run.load(out).evaluate(max_images=2, write_images=False)
    assert metrics["num_images"] == 2 and metrics["steps"] == 3
    cams = run.scene.split("test").cameras
    image = run.render(cams[0])["rgb"]
    assert image.shape == (int(cams.height[0]), int(cams.width[0]), 3) and bool(torch.isfinite(image).all())
    fieldforge.train(out=out, steps=5, resume=True)
    assert torch.load(RunDir(out).checkpoint, weights_only=True)["step"] == 5
    with pytest.raises(FieldforgeError, match="--resume continues the run as configured"):
        fieldforge.train(out=out, steps=6, resume=True, method="splat")


def test_loading_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(DataError, match="not a fieldforge run"):
        fieldforge.Run.load(tmp_path)
