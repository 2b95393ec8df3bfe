"""Control-variate estimator and residual ratio tracking: unbiasedness and variance reduction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fieldforge.fields.piecewise import PLMLP
from fieldforge.render.control_variates import (OnlineControlVariate, cv_integrate, mc_estimate,
                                                residual_ratio_tracking)

TRUTH = (math.e - 1) * 2 / math.pi + 1 / 6


def f_smooth(x: torch.Tensor) -> torch.Tensor:
    """exp(x) sin(pi y) + x y^2 on [0, 1]^2; integral (e - 1) 2 / pi + 1 / 6."""
    return (torch.exp(x[..., 0]) * torch.sin(math.pi * x[..., 1]) + x[..., 0] * x[..., 1] ** 2)[..., None]


def test_cv_estimator_is_unbiased_and_beats_plain_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    g = PLMLP.make(2, 1, width=16, depth=2).double()
    trainer = OnlineControlVariate(g, lr=1e-2, batch=2048, generator=gen)
    for _ in range(3):  # online: each round adds fresh samples to the replay buffer
        x = torch.rand(1024, 2, generator=gen, dtype=torch.float64)
        trainer.update(x, f_smooth(x), torch.ones(1024, dtype=torch.float64), steps=60)

    B, n = 2000, 16

    def sampler(k):
        return torch.rand(B, k, 2, generator=gen, dtype=torch.float64), torch.ones(B, k, dtype=torch.float64)
    cv = cv_integrate(f_smooth, sampler, g, [0, 0], [1, 1], n=n, n_alpha=n)
    x, p = sampler(n)
    mc = mc_estimate(f_smooth(x), p)
    for est in (cv, mc):
        v = est.value[:, 0]
        assert abs(float(v.mean()) - TRUTH) < 3 * float(v.std()) / math.sqrt(B)
    var_cv, var_mc = float(cv.value.var()), float(mc.value.var())
    assert var_cv < var_mc / 5, (var_cv, var_mc)
    # the per-estimate variance estimate agrees with the spread over independent estimates
    assert float(cv.variance.mean()) == pytest.approx(var_cv, rel=0.15)


def test_alpha_from_separate_samples_tracks_a_scaled_control():
    """With g = 0.5 f-like control, alpha ~ 2 restores the optimal variance; alpha = 1 is worse."""
    gen = torch.Generator().manual_seed(1)
    g = nn.Sequential(nn.Linear(2, 1)).double()
    with torch.no_grad():
        g[0].weight.copy_(torch.tensor([[0.5, 0.0]]))
        g[0].bias.zero_()

    def f(x):
        return x[..., :1] + 0.01 * torch.sin(20 * x[..., 1:])

    def sampler(k):
        return torch.rand(2000, k, 2, generator=gen, dtype=torch.float64), torch.ones(2000, k, dtype=torch.float64)
    fitted = cv_integrate(f, sampler, g, [0, 0], [1, 1], n=32, n_alpha=32)
    fixed = cv_integrate(f, sampler, g, [0, 0], [1, 1], n=32)
    assert float(fitted.alpha.mean()) == pytest.approx(2.0, rel=0.02)
    assert float(fitted.value.var()) < float(fixed.value.var()) / 50
    truth = 0.5 + 0.01 * (1 - math.cos(20)) / 20
    assert abs(float(fitted.value.mean()) - truth) < 3 * float(fitted.value.std()) / math.sqrt(2000)


def sigma_true(x: torch.Tensor) -> torch.Tensor:
    return 1.0 + 0.8 * torch.sin(2 * x[..., 0]) * torch.cos(x[..., 1]) + 0.5 * x[..., 2] ** 2


@pytest.mark.parametrize("majorant", [3.0, 0.4])  # above and below the residual bound: unbiased both
def test_residual_ratio_tracking_is_unbiased(majorant):
    torch.manual_seed(2)
    control = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    with torch.no_grad():
        control[2].weight.mul_(0.3)
        control[2].bias.fill_(1.0)
    o = torch.tensor([[0.0, 0.0, -1.0], [0.3, -0.2, -1.0], [-0.5, 0.4, -0.8]], dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.tensor([[0.0, 0, 1], [0.2, 0.1, 1], [0.3, -0.2, 1]],
                                                   dtype=torch.float64), dim=-1)
    L = 2.0
    t = torch.linspace(0, L, 100_001, dtype=torch.float64)
    ref = torch.exp(-torch.trapezoid(sigma_true(o[:, None] + t[:, None] * d[:, None]), t, dim=1))
    trials = 20_000
    gen = torch.Generator().manual_seed(3)
    T, count = residual_ratio_tracking(sigma_true, control, o.repeat(trials, 1), d.repeat(trials, 1), 0.0, L,
                                       majorant, generator=gen)
    T = T.reshape(trials, 3)
    se = T.std(0) / math.sqrt(trials)
    assert bool(((T.mean(0) - ref).abs() < 3 * se).all())
    assert float(count.double().mean()) == pytest.approx(majorant * L, rel=0.05)


def test_ratio_tracking_refuses_non_positive_majorant():
    control = nn.Sequential(nn.Linear(3, 1))
    with pytest.raises(ValueError, match="majorant"):
        residual_ratio_tracking(sigma_true, control, torch.zeros(2, 3), torch.ones(2, 3), 0.0, 1.0, 0.0)


def test_bench_cv_image_is_unbiased_against_the_stratified_reference():
    """The whole demo pipeline (train g, exact per-pixel G, residual MC) has no bias beyond noise."""
    import argparse

    from fieldforge.apps.bench import integrate as bench

    args = argparse.Namespace(train_share=0.5, width=8, depth=2, train_steps=30, lr=1e-2, max_regions=100_000,
                              alpha="fit", seed=0)
    gen = torch.Generator().manual_seed(4)
    hits = bench.primary_hits(12)
    ref, ref_var = bench.render_mc(hits, 1024, gen, stratified=True)
    cv = bench.render_cv(hits, 32, args, gen)
    diff = (cv["value"] - ref).sum()
    se = (cv["variance"] + ref_var).sum().sqrt()
    assert abs(float(diff)) < 3 * float(se)
    assert float(cv["variance"].sum()) > 0


def test_bench_refuses_bad_arguments_with_one_line(capsys):
    from fieldforge.apps.cli.main import main

    assert main(["bench", "integrate", "--ref-spp", "1000"]) == 2
    assert "square number" in capsys.readouterr().err
