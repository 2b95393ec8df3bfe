"""Every field method trains, checkpoints and renders back; distillation between fields through
``fieldforge distill`` and ``train --teacher``; bad teacher runs give one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fieldforge.apps.cli.main import main
from fieldforge.apps.training.run import load_run
from fieldforge.scenes import background_rgb

SMALL = ["--set", "init_batch_rays=64", "--set", "max_batch_rays=64", "--set", "grid_resolution=16",
         "--set", "grid_warmup=2", "--set", "render_chunk=1024"]
METHOD_SETS = {
    "nerf": ["width=16", "depth=2"],
    "ngp": ["n_levels=2", "log2_hashmap_size=10", "max_resolution=32", "hidden=16"],
    "kilonerf": ["cells=3"],
    "rbf": ["n_levels=2", "log2_hashmap_size=10", "max_resolution=32", "n_units=8"],
    "cam": ["width=16", "depth=2"],
}


def _train(run, method, steps=3, extra=()):
    args = ["train", "--method", method, "--out", str(run), "--steps", str(steps), "--downscale", "4", "--quiet",
            *SMALL]
    for kv in METHOD_SETS[method]:
        args += ["--set", kv]
    assert main(args + list(extra)) == 0


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "nerf"
    _train(run, "nerf", steps=4)
    return run


@pytest.mark.parametrize("method", sorted(METHOD_SETS))
def test_checkpoint_of_each_method_loads_and_renders(tmp_path, method):
    run = tmp_path / method
    _train(run, method)
    a, _, scene = load_run(run)
    b, _, _ = load_run(run)
    test = scene.split("test")
    bg = background_rgb(scene.background)
    ra, rb = a.render(test.cameras[0], bg), b.render(test.cameras[0], bg)
    h, w = int(test.cameras.height[0]), int(test.cameras.width[0])
    assert ra["rgb"].shape == (h, w, 3) and torch.isfinite(ra["rgb"]).all()
    assert torch.equal(ra["rgb"], rb["rgb"])
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["method"]["field"]
    for k, v in a.field.state_dict().items():
        assert torch.equal(v, state[k]), k
    # an untrained method of the same config renders something else: the weights were loaded
    c, _, _ = load_run(run, with_checkpoint=False)
    assert not torch.equal(c.render(test.cameras[0], bg)["rgb"], ra["rgb"])


def test_distill_verb_trains_a_student_that_no_longer_needs_its_teacher(tmp_path, teacher):
    t_copy = tmp_path / "teacher"
    shutil.copytree(teacher, t_copy)
    student = tmp_path / "student"
    assert main(["distill", str(t_copy), "--method", "kilonerf", "--out", str(student), "--steps", "4",
                 "--distill-steps", "2", "--quiet", *SMALL, "--set", "cells=3"]) == 0
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["method"]["teacher"] == str(t_copy.resolve())
    assert cfg["method"]["distill_steps"] == 2
    assert cfg["train"]["downscale"] == 4  # the teacher's scene settings
    lo, hi = cfg["method"]["bounds"][:3], cfg["method"]["bounds"][3:]
    assert all(a < b for a, b in zip(lo, hi)) and all(-1.5 - 1e-6 <= v <= 1.5 + 1e-6 for v in lo + hi)
    shutil.rmtree(t_copy)
    method, _, scene = load_run(student)
    out = method.render(scene.split("test").cameras[0], background_rgb(scene.background))
    assert torch.isfinite(out["rgb"]).all()
    assert tuple(method.field.aabb.reshape(-1).tolist()) == pytest.approx(cfg["method"]["bounds"])


def test_train_with_teacher_distils_first(tmp_path, teacher):
    from fieldforge.apps.training.methods.teacher import Teacher, load_teacher

    student = tmp_path / "ngp"
    _train(student, "ngp", steps=6, extra=["--teacher", str(teacher), "--set", "distill_steps=6", "--set", "lr=0.02"])
    trained, _, _ = load_run(student)
    untrained, _, _ = load_run(student, with_checkpoint=False)
    assert trained.estimator.binaries.any()  # filled from the teacher at distillation step 0
    t = Teacher(load_teacher(teacher, torch.device("cpu"))[0])

    def error(m):
        with torch.no_grad():
            return float(t.loss(m.field, trained.estimator, 4096, trained.step_size, torch.Generator().manual_seed(5)))

    assert error(trained) < 0.8 * error(untrained)


def _bad(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_bad_teachers_give_one_line_errors(tmp_path, teacher, capsys):
    out = ["--out", str(tmp_path / "s"), "--quiet"]
    err = _bad(["distill", str(tmp_path / "nope")] + out, capsys)
    assert "teacher" in err and "nope" in err and "not found" in err
    no_ckpt = tmp_path / "no_ckpt"
    shutil.copytree(teacher, no_ckpt)
    (no_ckpt / "checkpoints" / "last.pt").unlink()
    err = _bad(["distill", str(no_ckpt)] + out, capsys)
    assert "last.pt" in err and "checkpoint not found" in err
    bogus = tmp_path / "bogus"
    shutil.copytree(teacher, bogus)
    cfg = json.loads((bogus / "config.json").read_text())
    cfg["train"]["method"] = "bogus"
    (bogus / "config.json").write_text(json.dumps(cfg))
    err = _bad(["distill", str(bogus)] + out, capsys)
    assert "unknown method 'bogus'" in err
    splat = tmp_path / "splat"
    assert main(["train", "--method", "splat", "--out", str(splat), "--steps", "1", "--downscale", "4", "--quiet",
                 "--set", "init_num_points=100"]) == 0
    err = _bad(["distill", str(splat)] + out, capsys)
    assert "'splat' run has no field" in err
    err = _bad(["train", "--method", "splat", "--teacher", str(teacher)] + out, capsys)
    assert "does not train by distillation" in err
    assert not (tmp_path / "s").exists()  # nothing was written for the failed runs
