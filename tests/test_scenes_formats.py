"""nerfstudio / instant-ngp, Blender, D-NeRF, npz and DTU-style datasets written by the tests,
checked against independently computed intrinsics, poses, projections and bounds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from fieldforge.scenes import load
from fieldforge.scenes.loaders import detect_format
from fieldforge.scenes.rays import pixel_rays


def _pose(k: int) -> np.ndarray:
    """OpenGL camera-to-world on a ring around the origin, looking at it."""
    a = 2 * math.pi * k / 7
    eye = np.array([3 * math.cos(a), 3 * math.sin(a), 0.5])
    back = eye / np.linalg.norm(eye)
    right = np.cross([0, 0, 1.0], back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, :3] = np.stack([right, np.cross(back, right), back], -1)
    m[:3, 3] = eye
    return m


def _write_png(path: Path, w: int, h: int, c: int = 3, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    iio.imwrite(path, img)
    return img


def _hit(s, i, X, uv) -> float:
    rays = pixel_rays(s.cameras, torch.full((len(X),), i), torch.tensor(uv[:, 0]).float(), torch.tensor(uv[:, 1]).float())
    v = torch.tensor(X) - rays.origins.double()
    d = rays.directions.double()
    return float((v - (v * d).sum(-1, keepdim=True) * d).norm(dim=-1).max())


def _project_gl(c2w_gl, X, fx, fy, cx, cy, dist=None, fisheye=False) -> np.ndarray:
    """Pixels of world points for an OpenGL camera (x right, y up, z back), OpenCV lens formulas."""
    Xc = (X - c2w_gl[:3, 3]) @ c2w_gl[:3, :3]
    x, y = Xc[:, 0] / -Xc[:, 2], -Xc[:, 1] / -Xc[:, 2]
    if dist is not None and fisheye:
        k1, k2, k3, k4 = dist
        r = np.hypot(x, y)
        th = np.arctan(r)
        s = th * (1 + k1 * th**2 + k2 * th**4 + k3 * th**6 + k4 * th**8) / r
        x, y = x * s, y * s
    elif dist is not None:
        k1, k2, p1, p2 = dist
        r2 = x * x + y * y
        rad = 1 + k1 * r2 + k2 * r2 * r2
        x, y = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([fx * x + cx, fy * y + cy], -1)


def test_nerfstudio_per_frame_intrinsics_distortion_order_and_splits(tmp_path):
    names = ["img10.png", "img2.png", "img1.png", "img0.png", "img9.png", "img3.png", "img20.png", "img4.png", "img5.png"]
    frames = []
    for k, n in enumerate(names):
        _write_png(tmp_path / "rgb" / n, 40 if k != 1 else 48, 30, seed=k)
        f = {"file_path": f"rgb/{n}", "transform_matrix": _pose(k).tolist()}
        if k == 1:
            f.update(fl_x=50.0, fl_y=52.0, cx=23.0, cy=14.5, w=48, h=30)
        frames.append(f)
    meta = {"camera_model": "OPENCV", "fl_x": 45.0, "fl_y": 46.0, "cx": 19.5, "cy": 15.25, "w": 40, "h": 30,
            "k1": -0.05, "k2": 0.01, "p1": 0.001, "p2": -0.002, "aabb_scale": 2, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    assert detect_format(tmp_path) == "nerfstudio"
    s = load(tmp_path)
    assert s.names == [f"rgb/img{i}.png" for i in (0, 1, 2, 3, 4, 5, 9, 10, 20)]  # natural order
    assert s.splits["test"].tolist() == [0, 8] and len(s.splits["train"]) == 7
    assert s.protocol["split"].startswith("every 8th")
    i2 = s.names.index("rgb/img2.png")
    assert s.cameras.K[i2].tolist() == [[50.0, 0, 23.0], [0, 52.0, 14.5], [0, 0, 1]] and int(s.cameras.width[i2]) == 48
    assert s.cameras.model == "opencv"
    np.testing.assert_allclose(s.cameras.distortion[0].numpy(), [-0.05, 0.01, 0, 0, 0.001, -0.002], atol=1e-7)
    # instant-ngp aabb_scale 2 with default scale 0.33 / offset 0.5: world box +-1/0.33
    assert torch.allclose(s.bounds, torch.tensor([[-1 / 0.33] * 3, [1 / 0.33] * 3]))
    X = np.random.default_rng(0).uniform(-0.5, 0.5, (30, 3))
    for i, n in enumerate(s.names):
        k = names.index(n.split("/")[1])
        intr = (50.0, 52.0, 23.0, 14.5) if k == 1 else (45.0, 46.0, 19.5, 15.25)
        uv = _project_gl(_pose(k), X, *intr, dist=(-0.05, 0.01, 0.001, -0.002))
        assert _hit(s, i, X, uv) < 1e-4


def test_nerfstudio_fisheye_fov_time_masks_ply_and_listed_splits(tmp_path):
    from plyfile import PlyData, PlyElement
    frames = []
    for k in range(4):
        _write_png(tmp_path / f"f{k}.png", 32, 24, c=4, seed=k)
        m = np.zeros((24, 32), np.uint8)
        m[:, : 8 * (k + 1)] = 255
        iio.imwrite(tmp_path / f"m{k}.png", m)
        frames.append({"file_path": f"f{k}.png", "transform_matrix": _pose(k).tolist(), "time": k / 3, "mask_path": f"m{k}.png"})
    pts = np.random.default_rng(2).uniform(-1, 1, (500, 3)).astype(np.float32)
    v = np.zeros(500, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"], v["y"], v["z"], v["red"] = pts[:, 0], pts[:, 1], pts[:, 2], np.arange(500) % 256
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "sparse_pc.ply"))
    meta = {"camera_model": "OPENCV_FISHEYE", "camera_angle_x": 1.2, "k1": 0.02, "k2": -0.01, "k3": 0.003, "k4": -0.001,
            "ply_file_path": "sparse_pc.ply", "train_filenames": ["f0.png", "f2.png", "f3.png"], "test_filenames": ["f1.png"],
            "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    s = load(tmp_path)
    f = 0.5 * 32 / math.tan(0.6)
    assert torch.allclose(s.cameras.K[:, 0, 0], torch.tensor(f)) and torch.allclose(s.cameras.K[:, 1, 1], torch.tensor(f))
    assert s.cameras.model == "opencv_fisheye" and s.has_alpha
    assert torch.allclose(s.times, torch.tensor([0, 1 / 3, 2 / 3, 1.0]))
    assert s.splits["train"].tolist() == [0, 2, 3] and s.splits["test"].tolist() == [1]
    assert [int(m.sum()) for m in s.masks] == [24 * 8 * (k + 1) for k in range(4)]
    assert torch.equal(s.points, torch.from_numpy(pts)) and s.point_colors[:, 0].tolist() == [i % 256 for i in range(500)]
    X = np.random.default_rng(0).uniform(-0.5, 0.5, (30, 3))
    for k in range(4):
        uv = _project_gl(_pose(k), X, f, f, 16, 12, dist=(0.02, -0.01, 0.003, -0.001), fisheye=True)
        assert _hit(s, k, X, uv) < 1e-4
    half = load(tmp_path, downscale=2)
    assert half.masks[0].shape == (12, 16) and int(half.masks[0].sum()) == 12 * 4
    assert torch.allclose(half.cameras.K[:, :2, 2], torch.tensor([8.0, 6.0]))


def test_blender_odd_size_downscale_and_times(tmp_path):
    """Downscale of a 33x21 image drops the last column/row; K scales exactly by 1/2."""
    for split in ("train", "test"):
        frames = [{"file_path": f"./{split}/r_{k}", "transform_matrix": _pose(k).tolist(), "time": k / 2} for k in range(3)]
        for k in range(3):
            _write_png(tmp_path / split / f"r_{k}.png", 33, 21, c=4, seed=k)
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    full, half = load(tmp_path), load(tmp_path, downscale=2)
    assert "val" not in full.splits and full.splits["test"].tolist() == [3, 4, 5]
    assert torch.allclose(full.times, torch.tensor([0, 0.5, 1.0] * 2))
    assert half.images[0].shape == (10, 16, 4) and half.cameras.width.tolist() == [16] * 6
    assert torch.allclose(half.cameras.K, full.cameras.K * torch.tensor([[0.5], [0.5], [1.0]]))
    f = 0.5 * 33 / math.tan(0.4)
    assert abs(float(full.cameras.K[0, 0, 0]) - f) < 1e-4 and float(full.cameras.K[0, 1, 2]) == 10.5
    # the same world point seen from the full and the half camera lands on pixel coordinates x 1/2
    X = np.array([[0.1, -0.2, 0.3]])
    uv = _project_gl(_pose(1), X, f, f, 16.5, 10.5)
    assert _hit(full, 1, X, uv) < 1e-5 and _hit(half, 1, X, uv / 2) < 1e-5


def test_npz_float_images_without_split(tmp_path):
    g = np.random.default_rng(0)
    imgs = g.random((10, 8, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "tiny.npz", images=imgs, poses=np.stack([_pose(k) for k in range(10)]).astype(np.float32), focal=np.float32(7.0))
    s = load(tmp_path)
    assert s.format == "npz" and s.splits["test"].tolist() == [0, 8]
    assert torch.equal(s.images[3], torch.from_numpy(np.round(imgs[3] * 255).astype(np.uint8)))
    assert s.cameras.K[0].tolist() == [[7.0, 0, 3.0], [0, 7.0, 4.0], [0, 0, 1]]
    assert torch.allclose(s.cameras.c2w[:, :3, 2], -torch.from_numpy(np.stack([_pose(k)[:3, 2] for k in range(10)])).float())


def test_dtu_idr_layout_with_masks(tmp_path):
    """IDR layout: image/ and mask/; P = K[R|t] built here, loader must recover K, c2w exactly."""
    K = np.array([[60.0, 0, 31.0], [0, 58.0, 23.5], [0, 0, 1]])
    scale = np.diag([2.0, 2.0, 2.0, 1.0])
    scale[:3, 3] = [0.5, -0.25, 1.0]
    mats, c2ws = {}, []
    for k in range(3):
        c2w = _pose(k)
        c2w[:3, 1:3] *= -1  # OpenCV
        c2ws.append(c2w)
        # world_mat maps raw world points; the normalised frame is x_raw = scale @ x_norm
        w2c_norm = np.linalg.inv(c2w)
        world = np.eye(4)
        world[:3] = K @ w2c_norm[:3] @ np.linalg.inv(scale) * (3.0 if k == 1 else -2.0)  # arbitrary projective scale
        mats[f"world_mat_{k}"], mats[f"scale_mat_{k}"] = world, scale
        _write_png(tmp_path / "image" / f"{k:03d}.png", 64, 48, seed=k)
        m = np.zeros((48, 64), np.uint8)
        m[10:30, 5:50] = 255
        (tmp_path / "mask").mkdir(exist_ok=True)
        iio.imwrite(tmp_path / "mask" / f"{k:03d}.png", m)
    np.savez(tmp_path / "cameras.npz", **mats)
    s = load(tmp_path)
    assert s.format == "dtu" and s.protocol["layout"] == "idr" and "crop" not in s.protocol
    assert torch.allclose(s.cameras.K, torch.tensor(K).float().expand(3, 3, 3), atol=1e-4)
    assert torch.allclose(s.cameras.c2w, torch.tensor(np.stack(c2ws)).float(), atol=1e-5)
    assert int(s.masks[1].sum()) == 20 * 45
    r = s.cameras.centers.norm(dim=-1)
    assert abs(s.near - (float(r.min()) - 1)) < 1e-6 and abs(s.far - (float(r.max()) + 1)) < 1e-6
