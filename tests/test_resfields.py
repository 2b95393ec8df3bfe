"""ResFieldLinear: zero residual is the plain layer, exact frame weights at knot times, continuity,
per-sample times against a per-sample loop, bad frame ids."""

import pytest
import torch

from fieldforge.fields.resfields import ResFieldLinear


def _layer(mode="interpolation", capacity=5, rank=3):
    torch.manual_seed(0)
    return ResFieldLinear(6, 4, capacity, rank, mode=mode, init_std=0.3).double()


def test_zero_residual_equals_the_plain_linear_layer():
    layer = _layer()
    with torch.no_grad():
        layer.M.zero_()
    x = torch.randn(50, 6, dtype=torch.float64)
    t = torch.rand(50, 1, dtype=torch.float64)
    ref = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert torch.allclose(layer(x, t), ref, atol=1e-14)


@pytest.mark.parametrize("mode", ["interpolation", "lookup"])
def test_at_a_frames_time_the_weights_are_that_frames(mode):
    layer = _layer(mode)
    x = torch.randn(20, 6, dtype=torch.float64)
    for k in range(layer.capacity):
        t = torch.tensor(k / (layer.capacity - 1) if mode == "interpolation" else float(k), dtype=torch.float64)
        w = layer.weight + (layer.v[k] @ layer.M).reshape(4, 6)  # brute force: W + sum_r v_k[r] M_r
        ref = x @ w.T + layer.bias
        assert torch.allclose(layer(x, t), ref, atol=1e-12)
        assert torch.allclose(layer(x, t.expand(20)), ref, atol=1e-12)


def test_interpolation_is_continuous_and_linear_between_knots():
    layer = _layer(capacity=4)
    x = torch.randn(8, 6, dtype=torch.float64)
    knots = [k / 3 for k in range(4)]
    for a, b in zip(knots[:-1], knots[1:]):
        mid = layer(x, torch.tensor((a + b) / 2, dtype=torch.float64))
        avg = (layer(x, torch.tensor(a, dtype=torch.float64)) + layer(x, torch.tensor(b, dtype=torch.float64))) / 2
        assert torch.allclose(mid, avg, atol=1e-12)  # affine in t between knots
        for t in (a, b):  # no jump at the knots
            lo = layer(x, torch.tensor(t - 1e-7, dtype=torch.float64).clamp(0, 1))
            hi = layer(x, torch.tensor(t + 1e-7, dtype=torch.float64).clamp(0, 1))
            assert (lo - hi).abs().max() < 1e-5
    # outside [0, 1] clamps to the end frames
    assert torch.allclose(layer(x, torch.tensor(1.5, dtype=torch.float64)), layer(x, torch.tensor(1.0, dtype=torch.float64)))


def test_per_sample_times_match_a_loop_and_gradients_reach_both_factors():
    layer = _layer(capacity=6)
    x = torch.randn(40, 6, dtype=torch.float64)
    t = torch.rand(40, 1, dtype=torch.float64)
    out = layer(x, t)
    loop = torch.cat([layer(x[i:i + 1], t[i]) for i in range(40)])
    assert torch.allclose(out, loop, atol=1e-12)
    out.pow(2).sum().backward()
    assert layer.v.grad.abs().sum() > 0 and layer.M.grad.abs().sum() > 0


def test_bad_frame_ids_and_missing_time():
    layer = _layer("lookup", capacity=3)
    x = torch.randn(4, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"frame ids must be in \[0, 3\)"):
        layer(x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integers"):
        layer(x, torch.tensor([0.5, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="needs a time"):
        layer(x)
    with pytest.raises(ValueError, match="mode"):
        ResFieldLinear(2, 2, 3, mode="cp")


def test_few_distinct_times_use_per_time_weights_and_match_the_loop():
    layer = _layer(capacity=6)
    x = torch.randn(300, 6, dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.2, 0.9, 1.0])[torch.randint(5, (300,))].double()
    out = layer(x, t)
    loop = torch.cat([layer(x[i:i + 1], t[i]) for i in range(300)])
    assert torch.allclose(out, loop, atol=1e-12)
    layer.max_groups = 0  # force the factorised path: same result and gradients
    factorised = layer(x, t)
    assert torch.allclose(factorised, out, atol=1e-12)
    g1 = torch.autograd.grad(factorised.sum(), [layer.v, layer.M])
    g2 = torch.autograd.grad(out.sum(), [layer.v, layer.M])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-10)


def test_resfield_siren_with_zero_residual_is_the_siren_and_time_matters_otherwise():
    from fieldforge.encoders.siren import Siren
    from fieldforge.fields.resfields import ResFieldSiren

    torch.manual_seed(0)
    plain = Siren(3, 3, 32, 3)
    torch.manual_seed(0)
    res = ResFieldSiren(3, 3, 32, 3, capacity=8, rank=2)
    assert [type(m).__name__ for m in res.hidden] == ["Linear", "ResFieldLinear", "ResFieldLinear"]
    x = torch.rand(200, 3) * 2 - 1
    with torch.no_grad():
        saved = [m.M.clone() for m in res.hidden[1:]]
        for m in res.hidden[1:]:
            m.M.zero_()
        assert torch.equal(res(x), plain(x))  # SIREN's weights kept, residual off
        for m, M in zip(res.hidden[1:], saved):
            m.M.copy_(M * 100)
        a = res(torch.cat([x[:, :2], torch.full((200, 1), -1.0)], 1))
        b = res(torch.cat([x[:, :2], torch.full((200, 1), 1.0)], 1))
    # input time alone changes the output too; with the residual it changes through dW(t) as well
    assert not torch.allclose(a, b)
