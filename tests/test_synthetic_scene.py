"""The bundled procedural scene: determinism, geometry against projections, exact ray hits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldforge.scenes import synthetic as syn

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "default-scene"


def _read_split(root: Path, split: str):
    """(K [3,3], OpenCV c2w list, RGBA images) straight from the Blender JSON, no library code."""
    meta = json.loads((root / f"transforms_{split}.json").read_text())
    images = [iio.imread(root / f"{f['file_path']}.png") for f in meta["frames"]]
    W = images[0].shape[1]
    f = 0.5 * W / math.tan(0.5 * meta["camera_angle_x"])
    K = np.array([[f, 0, W / 2], [0, f, images[0].shape[0] / 2], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes -> OpenCV
    poses = [np.asarray(fr["transform_matrix"]) @ flip for fr in meta["frames"]]
    return K, poses, images


def _project(K, c2w, pts):
    w2c = np.linalg.inv(c2w)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    assert (cam[:, 2] > 0).all()
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:]


def _object_corners() -> np.ndarray:
    """Corners of a box holding every object, from their parameters."""
    pts = []
    s = syn.SPHERE
    pts = [np.array(s.center) + s.radius * (2 * np.array(c) - 1) for c in np.ndindex(2, 2, 2)]
    b = syn.BOX
    R = np.array([[math.cos(b.yaw), -math.sin(b.yaw), 0], [math.sin(b.yaw), math.cos(b.yaw), 0], [0, 0, 1]])
    pts += [np.array(b.center) + R @ (np.array(b.half) * (2 * np.array(c) - 1)) for c in np.ndindex(2, 2, 2)]
    for cyl in (syn.GROUND, syn.CYLINDER):
        for c in np.ndindex(2, 2, 2):
            xy = np.array(cyl.center) + cyl.radius * (2 * np.array(c[:2]) - 1)
            pts.append(np.array([xy[0], xy[1], (cyl.z0, cyl.z1)[c[2]]]))
    pts = np.array(pts)
    lo, hi = pts.min(0), pts.max(0)
    return np.array([[(lo, hi)[c[k]][k] for k in range(3)] for c in np.ndindex(2, 2, 2)])


def test_generator_is_deterministic(tmp_path):
    kw = dict(width=16, n_train=1, n_val=1, n_test=1)
    a = syn.generate(tmp_path / "a", seed=3, **kw)
    b = tmp_path / "b"
    syn.main([str(b), "--width", "16", "--train", "1", "--val", "1", "--test", "1", "--seed", "3"])
    c = syn.generate(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 1 + 1 + 3
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "transforms_train.json").read_text() != (c / "transforms_train.json").read_text()
    # the test split is a fixed orbit, independent of the seed
    assert (a / "test" / "r_0.png").read_bytes() == (c / "test" / "r_0.png").read_bytes()


def test_bundled_scene_layout_and_size():
    sizes = {}
    for split in ("train", "val", "test"):
        meta = json.loads((ASSETS / f"transforms_{split}.json").read_text())
        sizes[split] = len(meta["frames"])
        for fr in meta["frames"]:
            assert not Path(fr["file_path"]).suffix
            assert (ASSETS / f"{fr['file_path']}.png").is_file()
            c2w = np.asarray(fr["transform_matrix"])
            assert np.linalg.norm(c2w[:3, 3]) == pytest.approx(syn.RADIUS, abs=1e-5)
            # OpenGL: the camera looks along -z, i.e. at the origin
            assert np.allclose(-c2w[:3, 2], -c2w[:3, 3] / syn.RADIUS, atol=1e-6)
    assert sizes == {"train": 60, "val": 10, "test": 20}
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 3e6


def test_images_agree_with_projected_geometry():
    corners = _object_corners()
    assert (corners >= np.array(syn.BOUNDS[0])).all() and (corners <= np.array(syn.BOUNDS[1])).all()
    n_empty = 0
    for split in ("train", "test"):
        K, poses, images = _read_split(ASSETS, split)
        for c2w, img in zip(poses, images):
            assert img.shape == (100, 100, 4) and img.dtype == np.uint8
            (u, v), = _project(K, c2w, np.array([syn.SPHERE.center]))
            assert img[int(v), int(u), 3] == 255  # pixel centre (i + 0.5) convention
            uv = _project(K, c2w, corners)
            lo, hi = np.floor(uv.min(0)) - 1, np.ceil(uv.max(0)) + 1
            ii, jj = np.meshgrid(np.arange(100) + 0.5, np.arange(100) + 0.5)
            outside = (ii < lo[0]) | (ii > hi[0]) | (jj < lo[1]) | (jj > hi[1])
            assert (img[..., 3][outside] == 0).all()
            assert (img[..., :3][img[..., 3] == 0] == 0).all()
            n_empty += int(outside.sum())
            assert 0.1 < (img[..., 3] > 0).mean() < 0.9
    assert n_empty > 10000


def test_bundled_images_match_the_generator():
    """The committed PNGs are what the generator renders now (checked on 32x32 crops)."""
    K, poses, images = _read_split(ASSETS, "train")
    cams = syn.split_cameras(100, torch.tensor(np.stack([p[:3, 3] for p in poses[:2]])))
    assert np.allclose(cams.c2w.numpy(), np.stack(poses[:2]), atol=1e-6)
    ox, oy, n = 40, 30, 32
    cams.K[:, 0, 2] -= ox
    cams.K[:, 1, 2] -= oy
    cams.width[:], cams.height[:] = n, n
    for i in range(2):
        crop = images[i][oy:oy + n, ox:ox + n]
        assert (crop[..., 3] == 255).mean() > 0.5
        np.testing.assert_array_equal(syn.render_view(cams, i), crop)


def _inside(p: torch.Tensor) -> torch.Tensor:
    """Brute-force membership in the union of the solids, written from their parameters."""
    s, b = syn.SPHERE, syn.BOX
    inside = ((p - torch.tensor(s.center, dtype=p.dtype)) ** 2).sum(-1) <= s.radius**2
    c, sn = math.cos(b.yaw), math.sin(b.yaw)
    q = p - torch.tensor(b.center, dtype=p.dtype)
    local = torch.stack([c * q[..., 0] + sn * q[..., 1], -sn * q[..., 0] + c * q[..., 1], q[..., 2]], -1)
    inside |= (local.abs() <= torch.tensor(b.half, dtype=p.dtype)).all(-1)
    for cyl in (syn.GROUND, syn.CYLINDER):
        r2 = ((p[..., :2] - torch.tensor(cyl.center, dtype=p.dtype)) ** 2).sum(-1)
        inside |= (r2 <= cyl.radius**2) & (p[..., 2] >= cyl.z0) & (p[..., 2] <= cyl.z1)
    return inside


def _march_first_hit(o: torch.Tensor, d: torch.Tensor, step: float = 3e-3):
    """First inside point by dense marching over [1.5, 6.5] (cameras at radius 4, objects within
    radius 2 of the origin), then bisection of the bracketing step."""
    ts = torch.arange(1.5, 6.5, step, dtype=torch.float64)
    inside = _inside(o[:, None] + ts[None, :, None] * d[:, None])
    hit = inside.any(1)
    k = inside.double().argmax(1)
    lo, hi = ts[k] - step, ts[k]
    for _ in range(40):
        mid = (lo + hi) / 2
        m_in = _inside(o + mid[:, None] * d)
        hi, lo = torch.where(m_in, mid, hi), torch.where(m_in, lo, mid)
    return torch.where(hit, hi, torch.full_like(hi, math.inf))


def test_trace_matches_brute_force_marching():
    g = torch.Generator().manual_seed(1)
    n = 150
    eyes = syn._hemisphere_eyes(n, g)
    # targets inside the box, the ground disc and the sphere in turn (so every ray hits
    # something), then every tenth ray turned around to miss
    f64 = dict(generator=g, dtype=torch.float64)
    targets = torch.tensor(syn.SPHERE.center, dtype=torch.float64) + 0.4 * (torch.rand(n, 3, **f64) - 0.5)
    targets[::3] = torch.tensor(syn.BOX.center, dtype=torch.float64) + 0.2 * torch.randn(n // 3, 3, **f64).clamp(-1, 1)
    targets[1::3, :2] = 1.2 * (torch.rand(n // 3, 2, **f64) - 0.5)
    targets[1::3, 2] = -0.55
    d = targets - eyes
    d = d / d.norm(dim=-1, keepdim=True)
    away = torch.arange(n) % 10 == 9
    d[away] = -d[away]
    t, normal, idx = syn.trace(eyes, d)
    t_ref = _march_first_hit(eyes, d)
    assert torch.isinf(t[away]).all() and torch.isinf(t_ref[away]).all() and (idx[away] == -1).all()
    assert torch.isfinite(t[~away]).all()
    torch.testing.assert_close(t[~away], t_ref[~away], atol=1e-7, rtol=0)
    # the normal is outward: a step back along it leaves every solid, a step in enters one
    p = eyes[~away] + t[~away, None] * d[~away]
    assert not _inside(p + 1e-5 * normal[~away]).any()
    assert _inside(p - 1e-5 * normal[~away]).all()
    assert torch.allclose(normal.norm(dim=-1)[~away], torch.ones(1, dtype=torch.float64))
    assert set(idx[~away].tolist()) == {0, 1, 2, 3}


def test_loader_reads_the_bundled_scene_consistently():
    """Through ``fieldforge.scenes.load``: pixels fully covered in the PNGs have a hitting
    pixel-centre ray from the loaded (OpenCV) cameras, empty pixels a missing one."""
    from fieldforge.scenes.rays import camera_rays
    from fieldforge.scenes import load

    scene = load(ASSETS)
    assert {k: len(v) for k, v in scene.splits.items()} == {"train": 60, "val": 10, "test": 20}
    assert scene.has_alpha and scene.background == "white"
    test = scene.split("test")
    for i in (0, 7):
        rays = camera_rays(test.cameras, i)
        _, _, idx = syn.trace(rays.origins, rays.directions)
        alpha = test.images[i][..., 3].reshape(-1)
        hit = idx >= 0
        assert hit[alpha == 255].all() and not hit[alpha == 0].any()
        assert 0.2 < hit.double().mean() < 0.8
