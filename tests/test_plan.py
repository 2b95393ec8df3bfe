"""Training plans: phases rescaled to a horizon, the budget planner's estimate, time-budgeted runs
(with a fake clock: every step takes one second), resumes that extend the budget, seeds."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from fieldforge.apps.training import trainer
from fieldforge.apps.cli.main import main
from fieldforge.apps.training.methods import get_method
from fieldforge.apps.training.methods.dynamic_splat import DynamicSplatConfig
from fieldforge.apps.training.methods.radiance import RadianceConfig
from fieldforge.apps.training.methods.splat import SplatConfig, SplatMethod
from fieldforge.apps.training.plan import BudgetPlanner, phase_fields, planned
from fieldforge.apps.training.run import load_run
from tests.helpers import tiny_scene

SMALL_NGP = ["--set", "init_batch_rays=64", "--set", "max_batch_rays=64", "--set", "grid_resolution=16",
             "--set", "render_chunk=1024", "--set", "n_levels=2", "--set", "log2_hashmap_size=10",
             "--set", "max_resolution=32", "--set", "hidden=16", "--set", "steps=40", "--set", "grid_warmup=8"]


def test_planned_rescales_phases_and_keeps_intervals():
    cfg = DynamicSplatConfig()
    p = planned(cfg, 4000)  # a tenth of the 40,000-step recipe
    assert p.steps == 4000 and cfg.steps == 40_000  # the recipe itself is unchanged
    assert (p.warmup_steps, p.l2_until) == (300, 2000)
    assert (p.refine_every, p.reset_every, p.refine_start_iter, p.refine_stop_iter) == (100, 3000, 500, 20_000)
    assert planned(cfg, cfg.steps) == cfg
    assert planned(cfg, 1).warmup_steps == 1  # a positive position stays positive
    assert set(phase_fields(DynamicSplatConfig())) == {"warmup_steps", "l2_until"}
    assert set(phase_fields(RadianceConfig())) == {"distill_steps"}
    assert phase_fields(SplatConfig()) == []  # splat: only the learning-rate decay follows the plan
    with pytest.raises(ValueError, match="horizon"):
        planned(cfg, 0)


def test_budget_planner_uses_the_recent_rate():
    p = BudgetPlanner(seconds=100.0, initial=7, every=10, window=2)
    assert p.estimate(0, 0.0) == 7  # nothing measured yet
    assert p.revise(10, 10.0) and p.horizon == 100  # 1 s/step: 90 s left -> 90 more steps
    assert not p.revise(15, 15.0)  # only every 10 steps
    p.revise(20, 20.0)
    p.revise(30, 40.0)  # steps now take 2 s: rate over the last 2 marks (10..30: 30 s / 20 steps)
    assert p.horizon == 30 + int(60.0 / 1.5)
    p.revise(40, 100.0)  # budget spent: never below the next step
    assert p.horizon == 41
    q = BudgetPlanner(1.0, 1)
    q.load_state_dict(json.loads(json.dumps(p.state_dict())))  # plain data (config / checkpoint)
    assert q.state_dict() == p.state_dict()
    with pytest.raises(ValueError):
        BudgetPlanner(0.0, 10)


@pytest.fixture
def fake_clock(monkeypatch):
    """trainer.clock advances one second per call; a step is timed by two calls: one second each."""
    ticks = itertools.count()
    monkeypatch.setattr(trainer, "clock", lambda: float(next(ticks)))


def _train(run, *extra):
    return main(["train", "--method", "ngp", "--out", str(run), "--downscale", "4", "--quiet",
                 "--checkpoint-seconds", "1e9", *SMALL_NGP, *extra])


def _log(run):
    return [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]


def test_minutes_plan_fits_schedules_to_the_budget(tmp_path, fake_clock, capsys):
    run = tmp_path / "run"
    assert _train(run, "--minutes", "1.5") == 0  # 90 fake seconds: 90 steps
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 90 and summary["stopped_by"] == "minutes" and summary["horizon"] == 90
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["plan"] == "minutes" and cfg["train"]["horizon"] == 90
    assert cfg["method"]["steps"] == 40  # the recipe is kept; the plan extends it
    method, _, _ = load_run(run)
    assert method.config.steps == 90 and method.config.grid_warmup == 8  # a count, not a phase
    lr = method.optimizer.param_groups[0]["lr"]  # the last step's rate: the decay spanned the budget
    assert lr == pytest.approx(method.config.lr * method.config.lr_final_factor ** (89 / 90))


def test_resume_with_a_larger_budget_plans_like_a_fresh_run(tmp_path, fake_clock, capsys):
    fresh, short = tmp_path / "fresh", tmp_path / "short"
    assert _train(fresh, "--minutes", "2") == 0
    assert _train(short, "--minutes", "1") == 0
    assert json.loads((short / "config.json").read_text())["train"]["horizon"] == 60
    assert main(["train", "--out", str(short), "--resume", "--minutes", "2", "--quiet"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert out[0]["horizon"] == out[2]["horizon"] == 120 and out[2]["step"] == out[0]["step"] == 120
    assert json.loads((short / "config.json").read_text())["train"]["horizon"] == 120
    assert [r["step"] for r in _log(short)] == [r["step"] for r in _log(fresh)]


def test_a_config_with_an_unknown_plan_is_refused_on_resume(tmp_path, fake_clock, capsys):
    run = tmp_path / "run"
    assert _train(run, "--minutes", "0.5") == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["plan"] = "hours"
    (run / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.plan" in err and "hours" in err and "\n" not in err


def test_resume_of_a_budget_run_refuses_steps_and_bad_values_are_refused(tmp_path, fake_clock, capsys):
    run = tmp_path / "run"
    assert _train(run, "--minutes", "0.5") == 0
    capsys.readouterr()
    for args in (["--out", str(run), "--resume", "--steps", "50"],
                 ["--out", str(tmp_path / "x"), "--minutes", "0"],
                 ["--out", str(tmp_path / "y"), "--steps", "0"],
                 ["--out", str(tmp_path / "z"), "--steps", "-1"]):
        assert main(["train", "--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_resume_to_more_steps_spans_the_new_total(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--steps", "4") == 0
    assert main(["train", "--out", str(run), "--resume", "--steps", "8", "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["steps"] == 8 and cfg["method"]["steps"] == 8 and cfg["train"]["plan"] == "steps"


def test_a_budget_shorter_than_the_recipe_keeps_its_decay_and_rescales_its_phases():
    from fieldforge.apps.training.methods.dynamic_splat import DynamicSplatMethod

    scene = tiny_scene()
    scene.cameras.times = torch.linspace(0, 1, len(scene.images))
    m = DynamicSplatMethod(DynamicSplatConfig(init="random", init_num_points=20), scene, torch.device("cpu"))
    m.plan(2000)  # a twentieth of the 40,000-step recipe
    assert (m.config.steps, m.config.warmup_steps, m.config.l2_until) == (40_000, 150, 1000)


def test_a_budget_shorter_than_the_recipe_keeps_its_schedules(tmp_path, fake_clock, capsys):
    run = tmp_path / "run"
    assert _train(run, "--minutes", "0.5", "--set", "steps=400") == 0  # 30 steps of a 400-step recipe
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["horizon"] == 30
    method, _, _ = load_run(run)
    assert method.config.steps == 400
    lr = method.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(method.config.lr * method.config.lr_final_factor ** (29 / 400))


def test_seed_reaches_the_methods_generators():
    cls = get_method("ngp")
    scene = tiny_scene()

    def rays(seed):
        cfg = dataclasses.replace(cls.Config(), seed=seed, n_levels=2, log2_hashmap_size=10, max_resolution=32)
        return cls(cfg, scene, torch.device("cpu"))._batch(16)[0].directions

    assert torch.equal(rays(0), rays(0)) and not torch.equal(rays(0), rays(1))
    a = SplatMethod(dataclasses.replace(SplatConfig(), init="random", seed=0), scene, torch.device("cpu"))
    b = SplatMethod(dataclasses.replace(SplatConfig(), init="random", seed=1), scene, torch.device("cpu"))
    assert not torch.equal(a.model.means, b.model.means)


def test_splat_sizes_follow_the_images_and_the_plan_reaches_the_strategy():
    m = SplatMethod(SplatConfig(init="random"), tiny_scene(size=12), torch.device("cpu"))
    assert len(m.model) == m.init_points == round(2.5 * 144) and m.cap_max == 25 * 144
    m.plan(3000)  # shorter than the recipe: its schedules are kept
    assert m.config.steps == 30_000
    m.plan(60_000)  # longer: the learning-rate decay spans it, densification keeps its counts
    assert m.config.steps == 60_000 and m.recipe.steps == 30_000 and m.strategy.cap_max == m.cap_max
    assert (m.strategy.refine_start_iter, m.strategy.refine_stop_iter) == (500, 15_000)


def test_a_budget_too_small_for_a_step_says_so(tmp_path, fake_clock, capsys):
    assert _train(tmp_path / "run", "--minutes", "0.001") == 0  # 0.06 s: spent by the first step
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["step"] == 1
    assert "budget was spent by 1 step(s)" in captured.err and "more --minutes" in captured.err
