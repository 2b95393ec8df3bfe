"""Rasterizer: projection and SH parity with gsplat's pure-torch reference on the real garden
points, tile binning vs gsplat's reference, and the tile compositor (forward and custom
backward) vs the dense brute-force compositor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldforge.render.raster_dense import composite_dense
from fieldforge.render.raster_project import project_gaussians
from fieldforge.render.raster_tiles import bin_tiles
import fieldforge.render
from fieldforge.render.rasterize import rasterize, sh_colors
from tests.conftest import shared_path

gsplat_ref = pytest.importorskip("gsplat.cuda._torch_impl")


def garden(n: int = 8000):
    """gsplat's test fixture turned into Gaussians the way gsplat's load_test_data does."""
    data = np.load(shared_path("gsplat-test-garden") / "assets" / "test_garden.npz")
    g = torch.Generator().manual_seed(0)
    means = torch.from_numpy(data["means3d"]).float()
    means = means[torch.randperm(len(means), generator=g)[:n]]
    scales = torch.rand(n, 3, generator=g) * 0.02
    quats = torch.randn(n, 4, generator=g)
    opac = torch.rand(n, generator=g)
    return (means, quats, scales, opac, torch.from_numpy(data["viewmats"]).float(),
            torch.from_numpy(data["Ks"]).float(), int(data["width"]), int(data["height"]))


def test_projection_matches_gsplat_reference_on_garden():
    means, quats, scales, _, viewmats, Ks, W, H = garden()
    radii, means2d, depths, conics = project_gaussians(means, quats, scales, viewmats, Ks, W, H)
    covars, _ = gsplat_ref._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    r_radii, r_means2d, r_depths, r_conics, _ = gsplat_ref._fully_fused_projection(means, covars, viewmats, Ks, W, H)
    valid = (r_radii > 0).all(-1)
    assert valid.sum() > 12000  # all three views see many points
    assert torch.equal((radii > 0).all(-1), valid)
    assert torch.equal(radii[valid], r_radii[valid])
    torch.testing.assert_close(means2d[valid], r_means2d[valid], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(depths[valid], r_depths[valid])
    torch.testing.assert_close(conics[valid], r_conics[valid], rtol=1e-4, atol=1e-5)


def test_opacity_aware_radius_bounds_every_visible_pixel():
    means, quats, scales, opac, viewmats, Ks, W, H = garden(3000)
    radii, means2d, _, conics = project_gaussians(means, quats, scales * 3, viewmats[:1], Ks[:1], W, H, opacities=opac)
    ok = (radii[0] > 0).all(-1) & (radii[0] < 25).all(-1)
    assert not ((radii[0] > 0).all(-1) & (opac < 1 / 255)).any()
    m, c, o, r = means2d[0][ok], conics[0][ok], opac[ok], radii[0][ok]
    assert len(m) > 300
    # alpha on every pixel centre of a 61x61 window around each centre
    grid = torch.stack(torch.meshgrid(torch.arange(-30, 31), torch.arange(-30, 31), indexing="xy"), -1).reshape(-1, 2)
    pix = torch.floor(m)[:, None, :] + grid[None] + 0.5
    d = m[:, None, :] - pix
    e = 0.5 * (c[:, None, 0] * d[..., 0] ** 2 + c[:, None, 2] * d[..., 1] ** 2) + c[:, None, 1] * d[..., 0] * d[..., 1]
    seen = o[:, None] * torch.exp(-e) >= 1 / 255
    inside = (d.abs() <= r[:, None, :].float()).all(-1)
    assert seen.sum() > 1000 and not (seen & ~inside).any()


def test_sh_colors_match_gsplat_reference():
    means, *_ = garden(2000)
    dirs = means - torch.tensor([0.5, -1.0, 2.0])
    coeffs = torch.randn(len(means), 16, 3, generator=torch.Generator().manual_seed(1))
    for degree in range(4):
        ref = torch.clamp_min(gsplat_ref._spherical_harmonics(degree, dirs, coeffs) + 0.5, 0.0)
        torch.testing.assert_close(sh_colors(degree, dirs, coeffs), ref, rtol=1e-5, atol=1e-5)


def test_tile_binning_matches_gsplat_reference():
    means, quats, scales, opac, viewmats, Ks, W, H = garden(150)
    radii, means2d, depths, _ = project_gaussians(means, quats, scales * 20, viewmats[:1], Ks[:1], W, H)
    tiles_x, tiles_y = -(-W // 16), -(-H // 16)
    _, isect_ids, flatten_ids = gsplat_ref._isect_tiles(means2d, radii, depths, 16, tiles_x, tiles_y)
    bins = bin_tiles(means2d[0], radii[0], depths[0], W, H, 16)
    tile_of = torch.repeat_interleave(torch.arange(tiles_x * tiles_y), bins.counts)
    assert torch.equal(tile_of, (isect_ids >> 32).long())
    assert torch.equal(bins.ids, flatten_ids.long())


def small_scene(n=120, w=37, h=29, opacity_boost=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.8, 0.5]) + torch.tensor([0, 0, 4.0])
    quats = torch.randn(n, 4, generator=g)
    scales = (torch.rand(n, 3, generator=g) * 0.2 + 0.03) * (1 + 4 * opacity_boost)
    opac = (torch.rand(n, generator=g) * 0.9 + 0.05 + opacity_boost).clamp(max=0.999)
    colors = torch.rand(n, 3, generator=g)
    K = torch.tensor([[40.0, 0, w / 2 + 1.3], [0, 42.0, h / 2 - 0.7], [0, 0, 1]])[None]
    a = 0.1
    R = torch.tensor([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], dtype=torch.float32)
    vm = torch.eye(4)
    vm[:3, :3], vm[:3, 3] = R, torch.tensor([0.1, -0.2, 0.3])
    return [means, quats, scales, opac, colors], vm[None], K, w, h


def dense_render(params, vm, K, w, h, bg):
    means, quats, scales, opac, colors = params
    radii, m2, depths, conics = project_gaussians(means, quats, scales, vm, K, w, h, opacities=opac)
    vis = (radii[0] > 0).all(-1)
    return composite_dense(m2[0][vis], conics[0][vis], opac[vis], colors[vis], depths[0][vis], bg, w, h, chunk=300)


@pytest.mark.parametrize("boost,slots,max_block,tile", [(0.0, 8, 1 << 14, 16), (0.0, 32, 1 << 21, 4), (0.6, 4, 1 << 12, 8)])
def test_tile_rasterizer_matches_dense_reference(boost, slots, max_block, tile):
    params, vm, K, w, h = small_scene(opacity_boost=boost)
    params = [p.requires_grad_(True) for p in params]
    vm.requires_grad_(True)
    bg = torch.tensor([0.2, 0.5, 0.9])
    img, alpha, meta = rasterize(*params, vm, K, w, h, backgrounds=bg[None], tile_size=tile, slots=slots,
                                 max_block=max_block)
    ref_img, ref_alpha = dense_render(params, vm, K, w, h, bg)
    torch.testing.assert_close(img[0], ref_img, rtol=0, atol=2e-6)
    torch.testing.assert_close(alpha[0], ref_alpha, rtol=0, atol=2e-6)
    if boost:
        assert (ref_alpha > 0.999).sum() > 50  # deep enough for the transmittance stop rule
    wr, wa = torch.randn_like(img), torch.randn_like(alpha)
    inputs = params + [vm]
    grads = torch.autograd.grad((img * wr).sum() + (alpha * wa).sum(), inputs)
    ref = torch.autograd.grad((ref_img * wr[0]).sum() + (ref_alpha * wa[0]).sum(), inputs)
    for name, a, b in zip(["means", "quats", "scales", "opacities", "colors", "viewmats"], grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()), msg=name)


def test_render_modes_and_sh_match_dense():
    params, vm, K, w, h = small_scene(60)
    means, quats, scales, opac, _ = params
    sh = torch.randn(len(means), 9, 3, generator=torch.Generator().manual_seed(3)) * 0.5
    bg = torch.tensor([[1.0, 1.0, 1.0]])
    rgbd, alpha, meta = rasterize(means, quats, scales, opac, sh, vm, K, w, h, sh_degree=2, backgrounds=bg,
                                  render_mode="RGB+D")
    ed, _, _ = rasterize(means, quats, scales, opac, sh, vm, K, w, h, sh_degree=2, render_mode="ED")
    campos = torch.linalg.inv(vm)[0, :3, 3]
    colors = sh_colors(2, means - campos, sh)
    ref_rgb, ref_alpha = dense_render([means, quats, scales, opac, colors], vm, K, w, h, bg[0])
    depth_col = meta["depths"][0][:, None]
    ref_d, _ = dense_render([means, quats, scales, opac, depth_col], vm, K, w, h, torch.zeros(1))
    torch.testing.assert_close(rgbd[0, ..., :3], ref_rgb, rtol=0, atol=2e-6)
    torch.testing.assert_close(rgbd[0, ..., 3:], ref_d, rtol=1e-5, atol=1e-5)
    covered = ref_alpha[..., 0] > 0.05
    torch.testing.assert_close(ed[0][covered], (ref_d / ref_alpha)[covered], rtol=1e-5, atol=1e-5)


def test_multi_camera_and_per_camera_colors_equal_single_renders():
    params, vm, K, w, h = small_scene(50)
    vm2 = vm.clone()
    vm2[0, :3, 3] += torch.tensor([0.3, 0.1, -0.2])
    vms, Ks = torch.cat([vm, vm2]), torch.cat([K, K])
    cols = torch.rand(2, 50, 3)
    both, alphas, _ = rasterize(*params[:4], cols, vms, Ks, w, h)
    for c in range(2):
        one, a, _ = rasterize(*params[:4], cols[c], vms[c:c + 1], Ks[c:c + 1], w, h)
        torch.testing.assert_close(both[c], one[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(alphas[c], a[0], rtol=0, atol=1e-5)


def test_bad_arguments_raise_clear_errors():
    params, vm, K, w, h = small_scene(10)
    with pytest.raises(ValueError, match="quats"):
        rasterize(params[0], params[1][:, :3], *params[2:], vm, K, w, h)
    with pytest.raises(ValueError, match="render_mode"):
        rasterize(*params, vm, K, w, h, render_mode="rgb")
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(*params[:4], torch.zeros(10, 4, 3), vm, K, w, h, sh_degree=2)


def test_package_entry_point_is_the_rasterizer():
    assert fieldforge.render.rasterize is rasterize
    with pytest.raises(ValueError, match="means must be"):
        fieldforge.render.rasterize(torch.zeros(3), torch.zeros(1, 4), torch.ones(1, 3), torch.ones(1),
                                    torch.ones(1, 3), torch.eye(4)[None], torch.eye(3)[None], 8, 8)
