"""``pass_weights`` (one marching pass's compositing terms): the fast kernel, the PyTorch
reference and a per-sample brute force in float64."""

import math

import pytest
import torch

from fieldforge.render.volume import pass_weights


@pytest.mark.parametrize("alpha_thre", [0.0, 0.05])
def test_pass_weights_fast_reference_and_brute_force(monkeypatch, alpha_thre):
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 12, (40,), generator=g)  # ragged, some rays without samples
    r = torch.repeat_interleave(torch.arange(40), counts)
    sd = torch.rand(len(r), generator=g) * torch.where(torch.rand(len(r), generator=g) < 0.2, 0.0, 0.8)
    log_t = (torch.rand(40, generator=g, dtype=torch.float64) * 6)[r]  # some rays already near termination
    results = []
    for mode in ("auto", "torch"):
        monkeypatch.setenv("FIELDFORGE_KERNELS", mode)
        results.append(pass_weights(sd, r, 40, log_t, 1e-2, alpha_thre))
    (sd_f, sel_f, w_f), (sd_r, sel_r, w_r) = results
    assert torch.equal(sd_f, sd_r) and torch.equal(sel_f, sel_r)
    torch.testing.assert_close(w_f, w_r, rtol=1e-6, atol=1e-9)
    # brute force: each ray on its own, in float64
    expect_sel, expect_w = [], []
    for i in range(len(r)):
        tau = float(sd[i]) if 1 - math.exp(-float(sd[i])) >= alpha_thre else 0.0
        before = sum(float(sd_r[j]) for j in range(len(r)) if r[j] == r[i] and j < i)
        T = math.exp(-(float(log_t[i]) + before))
        if T >= 1e-2 and tau > 0:
            expect_sel.append(i)
            expect_w.append(T * (1 - math.exp(-tau)))
    assert sel_r.tolist() == expect_sel and len(expect_sel) > 10
    torch.testing.assert_close(w_r.double(), torch.tensor(expect_w, dtype=torch.float64), rtol=1e-5, atol=1e-9)
    assert len(pass_weights(sd[:0], r[:0], 40, log_t[:0], 1e-2, alpha_thre)[1]) == 0


def test_pass_weights_parts_start_rays_and_threads_agree():
    from fieldforge.kernels.volume import _parts

    r = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 5]).numpy()
    for n in (1, 2, 3, 4, 7):
        b = _parts(r, n)
        assert b[0] == 0 and b[-1] == len(r) and (b[1:] >= b[:-1]).all() and len(b) == n + 1
        assert all(c in (0, 3, 5, 9, 10) for c in b)  # every part starts a ray (or is empty)
    assert _parts(torch.zeros(6, dtype=torch.long).numpy(), 3).tolist() == [0, 6, 6, 6]
    g = torch.Generator().manual_seed(4)
    r = torch.repeat_interleave(torch.arange(300), torch.randint(0, 20, (300,), generator=g))
    sd, log_t = torch.rand(len(r), generator=g), torch.rand(len(r), generator=g, dtype=torch.float64)
    n = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(pass_weights(sd, r, 300, log_t, 1e-3, 0.02))
    finally:
        torch.set_num_threads(n)
    assert all(torch.equal(a, b) for a, b in zip(*results))
