"""CAM: identity at init, align-corners interpolation, scalar modulation, gradients, NeRF wiring, a fit."""

from __future__ import annotations

import math

import pytest
import torch

from fieldforge.apps.bench import signals as B
from fieldforge.fields.cam import CAMGrid, CAMMLP, viewdir_coords
from fieldforge.fields.mlp import MLP
from fieldforge.fields.nerf import NeRFField

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])


def lerp_reference(values: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Brute-force align-corners (bi)linear interpolation with border clamp, float64, point by point.

    values [C, R0] or [C, R0, R1]; c [N, k] -> [N, C]."""
    res = values.shape[1:]
    out = []
    for p in c.tolist():
        corners = [((), 1.0)]  # (knot index tuple, weight)
        for ci, r in zip(p, res):
            u = min(max((ci + 1) / 2 * (r - 1), 0.0), r - 1)
            i0 = min(int(math.floor(u)), r - 1)
            i1 = min(i0 + 1, r - 1)
            w = u - i0
            corners = [(idx + (i0,), wt * (1 - w)) for idx, wt in corners] + \
                      [(idx + (i1,), wt * w) for idx, wt in corners]
        out.append(sum(wt * values[(slice(None),) + idx] for idx, wt in corners))
    return torch.stack(out)


def test_identity_at_init_equals_plain_mlp():
    torch.manual_seed(1)
    plain = MLP(7, 16, 3, 4, skips=(2,)).double()
    cam = CAMMLP(7, 16, 3, 4, skips=(2,), cam_resolution=(5, 4)).double()
    missing, unexpected = cam.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["cam.beta", "cam.gamma"] and not unexpected
    x = torch.randn(3, 11, 7, dtype=torch.float64)
    c = torch.rand(3, 11, 2, dtype=torch.float64) * 2 - 1
    assert torch.allclose(cam(x, c), plain(x), rtol=0, atol=1e-15)
    # with per-sample normalisation the model is a different function
    cam.norm = "per_sample"
    assert not torch.allclose(cam(x, c), plain(x), atol=1e-3)


@pytest.mark.parametrize("resolution", [(6,), (5, 4), (2, 7)])
def test_interpolation_matches_brute_force_align_corners(resolution):
    grid = CAMGrid(resolution, mode="vector", channels=3, layers=2).double()
    with torch.no_grad():
        grid.gamma.copy_(torch.randn_like(grid.gamma))
        grid.beta.copy_(torch.randn_like(grid.beta))
    k = len(resolution)
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * k).reshape(-1, k)
    knots = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, r, dtype=torch.float64) for r in resolution],
                                       indexing="ij"), -1).reshape(-1, k)
    inside = torch.rand(50, k, dtype=torch.float64) * 2 - 1
    outside = torch.rand(10, k, dtype=torch.float64) * 4 - 2  # border clamp
    c = torch.cat([corners, knots, inside, outside])
    gamma, beta = grid(c)
    assert gamma.shape == beta.shape == (len(c), 6)
    assert torch.allclose(gamma, lerp_reference(grid.gamma.detach(), c), atol=1e-12)
    assert torch.allclose(beta, lerp_reference(grid.beta.detach(), c), atol=1e-12)
    # exact knots: c = -1 is the first knot, c = +1 the last (align corners, no half-cell shift)
    first, last = grid.gamma.detach()[(slice(None),) + (0,) * k], grid.gamma.detach()[(slice(None),) + (-1,) * k]
    assert torch.allclose(gamma[0], first, atol=1e-12) and torch.allclose(gamma[len(corners) - 1], last, atol=1e-12)
    # arbitrary leading dims
    g2, _ = grid(c[:60].reshape(3, 4, 5, k))
    assert torch.allclose(g2.reshape(60, 6), gamma[:60], atol=1e-15)


def test_scalar_mode_shares_one_factor_across_channels():
    torch.manual_seed(2)
    net = CAMMLP(5, 12, 2, 3, cam_resolution=(8, 8)).double()
    assert net.cam.gamma.shape == (2, 8, 8)  # one gamma per cell and layer
    with torch.no_grad():
        net.cam.gamma[0].fill_(2.0)
        net.cam.beta[0].fill_(0.5)
    x = torch.randn(20, 5, dtype=torch.float64)
    c = torch.rand(20, 2, dtype=torch.float64) * 2 - 1
    seen = {}
    net.hidden[1].register_forward_hook(lambda m, inp, out: seen.setdefault("a0", inp[0]))
    net(x, c)
    h = net.hidden[0](x)
    assert torch.allclose(seen["a0"], torch.relu(2 * h + 0.5), atol=1e-14)
    gamma, beta = net.cam(c)
    assert gamma.shape == (20, 2) and torch.allclose(gamma[:, 0], torch.full((20,), 2.0, dtype=torch.float64))
    vec = CAMGrid((3,), mode="vector", channels=12)
    assert vec(torch.zeros(4, 1))[0].shape == (4, 12)


def test_gradients_reach_the_grid():
    net = CAMMLP(4, 8, 3, 2, cam_resolution=(4,), norm="per_sample")
    x, c = torch.randn(32, 4), torch.rand(32, 1) * 2 - 1
    net(x, c).square().sum().backward()
    for p in net.cam_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert {id(p) for p in net.cam_parameters()} == {id(net.cam.gamma), id(net.cam.beta)}


def test_viewdir_coords_clean_mapping():
    d = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0], [0, 0, -1.0], [-1.0, 1e-12, 0]])
    c = viewdir_coords(d * 3)  # scale-free
    expected = torch.tensor([[0, 0], [0.5, 0], [-0.5, 0], [0, 1], [0, -1], [1, 0]])
    assert torch.allclose(c, expected, atol=1e-6)
    dirs = torch.nn.functional.normalize(torch.randn(1000, 3), dim=-1)
    assert viewdir_coords(dirs).abs().max() <= 1


@pytest.mark.parametrize("coord", ["viewdir", "time"])
def test_nerf_cam_at_init_equals_plain_nerf(coord):
    torch.manual_seed(3)
    plain = NeRFField(AABB, width=32, depth=3, pos_freqs=4, dir_freqs=2)
    torch.manual_seed(3)
    cam = NeRFField(AABB, width=32, depth=3, pos_freqs=4, dir_freqs=2, cam=True, cam_coord=coord)
    # same seed -> same weights; the state dict of the plain field loads with only the grids missing
    missing, unexpected = cam.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(".cam." in k for k in missing) and not unexpected
    grid = next(m for m in cam.modules() if isinstance(m, CAMGrid))
    assert grid.resolution == ((10, 3) if coord == "viewdir" else (5,))
    x = torch.rand(64, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    t = torch.rand(64, 1)
    a, b = plain(x, d, t), cam(x, d, t)
    assert torch.equal(a["density"], b["density"]) and torch.equal(a["rgb"], b["rgb"])
    assert torch.equal(cam.density(x, t), b["density"])
    # a non-trivial grid changes the modulated branch, and density stays consistent
    with torch.no_grad():
        grid.gamma.copy_(1 + torch.randn_like(grid.gamma))
        grid.beta.copy_(torch.randn_like(grid.beta))
    b2 = cam(x, d, t)
    assert torch.equal(cam.density(x, t), b2["density"])
    if coord == "viewdir":  # colour only: density is that of the plain field, for any direction
        assert torch.equal(b2["density"], a["density"]) and torch.equal(cam(x, -d, t)["density"], a["density"])
        assert not torch.allclose(b2["rgb"], a["rgb"], atol=1e-4)
    else:  # the trunk: density now depends on t
        assert not torch.allclose(b2["density"], a["density"], atol=1e-4)
        assert not torch.allclose(cam.density(x, t), cam.density(x, 1 - t), atol=1e-4)


def test_fit_tiny_image_moves_the_grids():
    torch.manual_seed(4)
    n = 32
    g = (torch.arange(n) + 0.5) / n
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    xy = torch.stack([xx, yy], -1).reshape(-1, 2)
    target = (0.5 + 0.4 * torch.sin(6 * xy[:, :1]) * torch.cos(9 * xy[:, 1:]) * (xy[:, :1] > 0.4)).clamp(0, 1)
    sig = B.Signal("toy", "image", xy, target, xy, target, (n, n))
    ctx = B.Ctx(2, 1, n, 32, 3, 0)
    model = B.ENCODINGS["cam"].build(ctx)
    net = next(m for m in model.modules() if isinstance(m, CAMMLP))
    groups = B.param_groups(model, 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-2)]
    before = [p.detach().clone() for p in net.cam_parameters()]
    with torch.no_grad():
        loss0 = float(B.loss_per_point(model(xy), target, "image").mean())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread avoids oversubscribing a shared CPU
    try:
        B.fit_signal(model, sig, 200, B.ENCODINGS["cam"].lr)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        loss1 = float(B.loss_per_point(model(xy), target, "image").mean())
    assert loss1 < 0.5 * loss0
    assert all((p.detach() - q).abs().max() > 1e-3 for p, q in zip(net.cam_parameters(), before))


def test_bad_inputs_raise_value_error():
    grid = CAMGrid((10, 3))
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        grid(torch.zeros(5, 3))
    net = CAMMLP(4, 8, 2, 1, cam_resolution=(5,))
    with pytest.raises(ValueError, match=r"\[\.\.\., 1\]"):
        net(torch.zeros(5, 4), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="mode"):
        CAMGrid((4,), mode="film")
    with pytest.raises(ValueError, match="resolution"):
        CAMGrid((4, 4, 4))
    with pytest.raises(ValueError, match="norm"):
        CAMMLP(4, 8, 2, 1, cam_resolution=(5,), norm="per_ray")
    with pytest.raises(ValueError, match="relu"):
        NeRFField(AABB, cam=True, activation="sine")
    with pytest.raises(ValueError, match="cam_coord"):
        NeRFField(AABB, cam=True, cam_coord="position")
    with pytest.raises(ValueError, match="need t"):
        NeRFField(AABB, width=16, depth=2, cam=True, cam_coord="time").density(torch.zeros(2, 3))
