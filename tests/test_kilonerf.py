"""KiloNeRF: routing points to cell networks, batched evaluation against a per-network loop,
and distillation from a teacher field."""

from __future__ import annotations

import math

import pytest
import torch

from fieldforge.apps.training.methods.teacher import Teacher
from fieldforge.fields.kilonerf import KiloNeRFField, grid_resolution
from fieldforge.fields.nerf import NeRFField
from fieldforge.render.occupancy import OccupancyGrid

AABB = torch.tensor([[-0.67, -1.2, -0.37], [0.67, 1.2, 1.03]])  # lego's box in the reference


def _field(cells=4, block=8, seed=0) -> KiloNeRFField:
    f = KiloNeRFField(AABB, cells=cells, block=block).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # make every network different (they start identical)
        for p in f.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return f


def _points(n, seed=0, margin=0.1):
    g = torch.Generator().manual_seed(seed)
    lo, hi = AABB[0] - margin, AABB[1] + margin
    return (lo + torch.rand(n, 3, generator=g) * (hi - lo)).double(), \
        torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1).double()


def test_grid_resolution_matches_the_reference():
    assert grid_resolution(AABB, 16) == (9, 16, 10)  # 1440 networks for lego (KiloNeRF, arXiv:2103.13744)
    assert KiloNeRFField(AABB).n_nets == 1440
    f = KiloNeRFField(AABB)
    assert sum(p.numel() for p in f.parameters()) == 1440 * 6212


def test_every_point_goes_to_the_network_of_its_cell():
    f = _field(cells=5)
    x, _ = _points(3000, margin=0.05)
    nets, local, inside = f.cell_of(x)
    res = f.resolution
    size = (AABB[1] - AABB[0]).double() / torch.tensor(res, dtype=torch.float64)
    for p in range(0, 3000, 7):  # brute force: search the cell whose box holds the point
        found = None
        for i in range(res[0]):
            for j in range(res[1]):
                for k in range(res[2]):
                    lo = AABB[0].double() + size * torch.tensor([i, j, k], dtype=torch.float64)
                    if bool(((x[p] >= lo) & (x[p] < lo + size)).all()):
                        found = (i * res[1] + j) * res[2] + k  # z fastest
        assert bool(inside[p]) == (found is not None)
        if found is not None:
            assert int(nets[p]) == found
            lo = AABB[0].double() + size * torch.tensor([found // (res[1] * res[2]), (found // res[2]) % res[1],
                                                         found % res[2]], dtype=torch.float64)
            assert torch.allclose(local[p], 2 * (x[p] - lo) / size - 1, atol=1e-9)
    assert local[inside].abs().max() <= 1.0


def _loop_reference(f: KiloNeRFField, x, d):
    """Per-network loop: each network evaluated on its own points with plain matmuls."""
    nets, local, inside = f.cell_of(x)
    sigma = torch.zeros(len(x), 1, dtype=x.dtype)
    rgb = torch.full((len(x), 3), 0.5, dtype=x.dtype)
    for n in torch.unique(nets[inside]).tolist():
        m = inside & (nets == n)
        h = f.pos_enc(local[m])
        for layer in f.hidden:
            h = torch.relu(h @ layer.weight[n] + layer.bias[n])
        s = h @ f.sigma.weight[n] + f.sigma.bias[n]
        feat = h @ f.feature.weight[n] + f.feature.bias[n]
        v = torch.relu(torch.cat([feat, f.dir_enc(d[m])], -1) @ f.view.weight[n] + f.view.bias[n])
        sigma[m] = torch.relu(s)
        rgb[m] = torch.sigmoid(v @ f.rgb.weight[n] + f.rgb.bias[n])
    return sigma, rgb


@pytest.mark.parametrize("block", [1, 8, 64])
def test_batched_evaluation_equals_a_loop_over_networks(block):
    f = _field(cells=4, block=block)
    x, d = _points(2000, seed=1)
    out = f(x, d)
    sigma, rgb = _loop_reference(f, x, d)
    assert torch.allclose(out["density"], sigma, atol=1e-10)
    assert torch.allclose(out["rgb"], rgb, atol=1e-10)
    assert torch.equal(f.density(x), out["density"])
    assert (out["density"][~f.cell_of(x)[2]] == 0).all()


def test_batched_gradients_equal_the_loop_gradients():
    f = _field(cells=3, block=8)
    x, d = _points(500, seed=2)
    w = torch.randn(500, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def grads(fn):
        f.zero_grad()
        s, c = fn()
        (torch.cat([s, c], -1) * w).sum().backward()
        return [p.grad.clone() for p in f.parameters()]

    def batched():
        o = f(x, d)
        return o["density"], o["rgb"]

    for a, b in zip(grads(batched), grads(lambda: _loop_reference(f, x, d))):
        assert torch.allclose(a, b, atol=1e-9)


def test_networks_share_one_initialisation():
    f = KiloNeRFField(AABB, cells=4)
    for p in f.parameters():
        assert torch.equal(p, p[:1].expand_as(p))


def test_distillation_lowers_the_error_against_the_teacher():
    torch.manual_seed(0)
    aabb = AABB
    teacher_field = NeRFField(aabb, width=32, depth=2, pos_freqs=3)
    with torch.no_grad():
        teacher_field.sigma.bias.fill_(2.0)  # some density everywhere, so alpha is not trivially 0
    teacher = Teacher(teacher_field)
    student = KiloNeRFField(aabb, cells=3)
    grid = OccupancyGrid(aabb.reshape(-1), 16)
    step = 0.02
    teacher.init_occupancy(grid, step, 1e-2)
    assert grid.binaries.any()
    g = torch.Generator().manual_seed(1)

    def error():
        return float(teacher.loss(student, grid, 4096, step, torch.Generator().manual_seed(99)).detach())

    before = error()
    opt = torch.optim.Adam(student.parameters(), lr=5e-3)
    for _ in range(150):
        loss = teacher.loss(student, grid, 1024, step, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = error()
    assert after < before / 3, (before, after)
    assert math.isfinite(after)
