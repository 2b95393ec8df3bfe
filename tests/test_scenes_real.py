"""Loaders on the real datasets in ../shared/data (skipped when absent), checked against the
raw files read independently (json / numpy) and against known geometry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fieldforge.errors import DataError
from fieldforge.scenes import load
from fieldforge.scenes.loaders import detect_format
from fieldforge.scenes.rays import pixel_rays
from tests.conftest import shared_path

LEGO_ANGLE = 0.6911112070083618


def _axis_angle_to_origin_deg(c2w: torch.Tensor) -> torch.Tensor:
    """Angle between each camera's optical axis (+z column, OpenCV) and the direction to the origin."""
    z = c2w[:, :3, 2].double()
    to_o = -c2w[:, :3, 3].double()
    cos = (z * to_o).sum(-1) / (z.norm(dim=-1) * to_o.norm(dim=-1))
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


@pytest.fixture(scope="module")
def lego():
    return load(shared_path("nerf-synthetic-lego-200"))


@pytest.fixture(scope="module")
def lego_half():
    return load(shared_path("nerf-synthetic-lego-200"), downscale=2)


def test_lego_blender(lego):
    root = shared_path("nerf-synthetic-lego-200")
    assert detect_format(root) == "blender" and lego.format == "blender"
    assert {k: len(v) for k, v in lego.splits.items()} == {"train": 100, "val": 100, "test": 200}
    f = 0.5 * 200 / math.tan(0.5 * LEGO_ANGLE)
    assert abs(f - 277.78) < 0.01
    assert torch.allclose(lego.cameras.K[:, 0, 0], torch.tensor(f), atol=1e-3)
    assert torch.allclose(lego.cameras.K[:, :2, 2], torch.tensor(100.0))
    r = lego.cameras.centers.norm(dim=-1)
    assert (r - 4.031).abs().max() < 0.01
    assert _axis_angle_to_origin_deg(lego.cameras.c2w).max() < 0.1
    assert lego.has_alpha and lego.background == "white" and (lego.near, lego.far) == (2.0, 6.0)
    # poses equal the JSON's OpenGL matrices with the y and z columns negated
    raw = json.loads((root / "transforms_test.json").read_text())["frames"][7]
    m = np.array(raw["transform_matrix"])
    i = lego.names.index("test/r_7")
    np.testing.assert_allclose(lego.cameras.c2w[i, :3, 0].numpy(), m[:3, 0], atol=1e-6)
    np.testing.assert_allclose(lego.cameras.c2w[i, :3, 1:3].numpy(), -m[:3, 1:3], atol=1e-6)
    # the image content: an alpha-composited pixel of a known file
    import imageio.v3 as iio
    png = iio.imread(root / "test" / "r_7.png")
    assert torch.equal(lego.images[i], torch.from_numpy(png))


def test_lego_downscale_is_area_average_in_premultiplied_alpha(lego, lego_half):
    small = lego_half
    assert small.images[0].shape == (100, 100, 4)
    assert torch.allclose(small.cameras.K[:, 0, 0], lego.cameras.K[:, 0, 0] / 2)
    assert torch.allclose(small.cameras.K[:, :2, 2], torch.tensor(50.0))
    for i in (0, 150, 399):
        full = lego.rgb(i).double().numpy()  # composited on white
        ref = full.reshape(100, 2, 100, 2, 3).mean((1, 3))
        assert np.abs(small.rgb(i).double().numpy() - ref).max() <= 1.0 / 255 + 1e-9


def test_lego_npz_matches_blender(lego, lego_half):
    s = load(shared_path("nerf-synthetic-lego-100-npz"))
    assert detect_format(shared_path("nerf-synthetic-lego-100-npz") / "lego_100.npz") == "npz"
    assert len(s) == 400 and {k: len(v) for k, v in s.splits.items()} == {"train": 100, "val": 100, "test": 200}
    assert torch.allclose(s.cameras.K[:, 0, 0], torch.tensor(138.8889), atol=1e-3)
    # same cameras as the Blender JSONs, in the same order
    assert torch.allclose(s.cameras.c2w, lego.cameras.c2w, atol=1e-5)
    # both were box-downscaled from 800 px in premultiplied alpha: 200 -> 100 must agree with the npz
    small = lego_half
    diff = torch.stack([(s.rgb(i) - small.rgb(i)).abs().mean() for i in range(0, 400, 40)])
    assert diff.max() < 1.0 / 255


def test_dnerf_times():
    root = shared_path("dnerf-lego-400")
    s = load(root)
    assert {k: len(v) for k, v in s.splits.items()} == {"train": 50, "val": 11, "test": 20}
    for split in ("train", "val", "test"):
        raw = [fr["time"] for fr in json.loads((root / f"transforms_{split}.json").read_text())["frames"]]
        t = s.times[s.splits[split]]
        np.testing.assert_allclose(t.numpy(), raw, atol=1e-7)
        assert t[0] == 0.0
    val = s.split("val")
    assert (val.cameras.c2w - val.cameras.c2w[0]).abs().max() < 1e-6  # one fixed camera over time
    assert (s.cameras.centers.norm(dim=-1) - 4.031).abs().max() < 0.01
    assert torch.allclose(s.cameras.K[:, 0, 0], torch.tensor(0.5 * 400 / math.tan(0.5 * LEGO_ANGLE)))
    rays = pixel_rays(s.cameras, torch.tensor([0, 60]), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    assert torch.equal(rays.times[:, 0], s.times[torch.tensor([0, 60])])


def _project(K, c2w, X):
    w2c = torch.linalg.inv(c2w.double())
    Xc = X.double() @ w2c[:3, :3].T + w2c[:3, 3]
    uv = Xc[:, :2] / Xc[:, 2:] * K.double().diagonal()[:2] + K.double()[:2, 2]
    return uv, Xc[:, 2]


def _median_colour_error(s, poses) -> float:
    errs = []
    for i in range(len(s)):
        uv, z = _project(s.cameras.K[i], poses[i], s.points)
        img = s.images[i].double()
        H, W = img.shape[:2]
        ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        px = img[uv[ok, 1].long(), uv[ok, 0].long()]
        errs.append((px - s.point_colors[ok].double()).abs().mean(-1))
    return float(torch.cat(errs).median())


def test_llff_fern():
    root = shared_path("llff-fern")
    s = load(root, downscale=8)
    assert s.format == "llff" and len(s) == 20 and s.images[0].shape == (378, 504, 3)
    raw = np.load(root / "poses_bounds.npy")
    poses = raw[:, :15].reshape(-1, 3, 5)
    np.testing.assert_allclose(s.cameras.K[:, 0, 0].numpy(), poses[:, 2, 4] / 8, rtol=1e-6)
    assert s.splits["test"].tolist() == [0, 8, 16]
    sc = 1 / (raw[:, 15].min() * 0.75)
    assert abs(s.near - raw[:, 15].min() * sc) < 1e-6 and s.far > raw[:, 16].max() * sc
    # relative rotations/distances are those of the raw [down, right, back] poses converted to OpenCV
    R_cv = np.stack([poses[:, :, 1], poses[:, :, 0], -poses[:, :, 2]], -1)
    R = s.cameras.c2w[:, :3, :3].double().numpy()
    rel_ref = np.einsum("nji,njk->nik", R_cv[:1], R_cv)
    rel = np.einsum("nji,njk->nik", R[:1], R)
    np.testing.assert_allclose(rel, rel_ref, atol=1e-5)
    d_ref = np.linalg.norm(poses[:, :, 3] - poses[0, :, 3], axis=-1) * sc
    d = (s.cameras.centers - s.cameras.centers[0]).norm(dim=-1).numpy()
    np.testing.assert_allclose(d, d_ref, atol=1e-5)
    # seed points (COLMAP frame, transformed like the poses) reproject onto their colours
    assert s.points.shape == (10091, 3) and s.point_colors.dtype == torch.uint8
    good = _median_colour_error(s, s.cameras.c2w)
    shuffled = _median_colour_error(s, s.cameras.c2w[torch.roll(torch.arange(20), 5)])
    assert good < 30 and good < 0.7 * shuffled, (good, shuffled)
    inside = ((s.points >= s.bounds[0]) & (s.points <= s.bounds[1])).all(-1).float().mean()
    assert 0.9 < inside < 0.99


def test_colmap_on_fern_without_images_bin():
    """fern's sparse/0 has cameras.bin and points3D.bin but no images.bin: a clear error."""
    root = shared_path("llff-fern")
    with pytest.raises(DataError) as e:
        load(root, format="colmap", downscale=8)
    assert "images.bin" in str(e.value) and "sparse/0" in str(e.value)
    from fieldforge.scenes.loaders import colmap_files as cf
    cams = cf.read_cameras(root / "sparse" / "0" / "cameras.bin")
    (cid, cam), = cams.items()
    assert (cam.model, cam.width, cam.height) == ("SIMPLE_RADIAL", 4032, 3024)
    (fx, fy, cx, cy), dist, model = cf.intrinsics(root / "cameras.bin", cid, cam)
    assert model == "opencv" and abs(fx - 3260.526) < 0.01 and (cx, cy) == (2016, 1512) and abs(dist[0] - 0.01975) < 1e-4
    pts, rgb = cf.read_points(root / "sparse" / "0" / "points3D.bin")
    assert pts.shape == (10091, 3) and rgb.shape == (10091, 3)


def test_dtu_scan24():
    root = shared_path("dtu-scan24-monosdf")
    s = load(root)
    assert s.format == "dtu" and len(s) == 49 and s.images[0].shape == (384, 384, 3)
    r = s.cameras.centers.norm(dim=-1)
    assert (r - 2.72).abs().max() < 0.01
    assert _axis_angle_to_origin_deg(s.cameras.c2w).max() < 5
    pp = s.cameras.K[:, :2, 2]
    assert ((pp > 0) & (pp < 384)).all()
    assert torch.equal(s.bounds, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    # independent: project points with the raw P = world_mat @ scale_mat, apply MonoSDF's crop
    # (u - 200, v) * 384/1200, and require the loaded K, c2w to give the same pixels and the
    # pixel rays through them to hit the points
    cams = np.load(root / "cameras.npz")
    g = np.random.default_rng(0)
    X = g.uniform(-0.5, 0.5, (50, 3))
    for i in (0, 17, 48):
        P = (cams[f"world_mat_{i}"] @ cams[f"scale_mat_{i}"])[:3]
        x = np.c_[X, np.ones(50)] @ P.T
        uv_ref = np.stack([(x[:, 0] / x[:, 2] - 200) * 384 / 1200, x[:, 1] / x[:, 2] * 384 / 1200], -1)
        uv, _ = _project(s.cameras.K[i], s.cameras.c2w[i], torch.tensor(X))
        assert np.abs(uv.numpy() - uv_ref).max() < 0.05  # (K's tiny skew is ignored by _project)
        rays = pixel_rays(s.cameras, torch.full((50,), i), torch.tensor(uv_ref[:, 0]).float(), torch.tensor(uv_ref[:, 1]).float())
        v = torch.tensor(X) - rays.origins.double()
        d = rays.directions.double()
        miss = (v - (v * d).sum(-1, keepdim=True) * d).norm(dim=-1)
        assert miss.max() < 2e-4
