"""COLMAP models written by the test itself (.txt and .bin, with its own writer) with known
poses, intrinsics and points: round trip, projections, camera-model mapping, bad files."""

from __future__ import annotations

import struct
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from fieldforge.errors import DataError
from fieldforge.scenes import load
from fieldforge.scenes.loaders import detect_format
from fieldforge.scenes.rays import pixel_rays

MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "OPENCV": 4, "OPENCV_FISHEYE": 5,
             "FULL_OPENCV": 6, "FOV": 7}
W, H = 64, 48
# camera id -> (model, params); ids deliberately non-contiguous
CAMERAS = {3: ("PINHOLE", [70.0, 72.0, 31.5, 24.5]), 9: ("OPENCV", [80.0, 79.0, 33.0, 23.0, -0.12, 0.03, 0.002, -0.001])}


def _look_at(eye, target=np.zeros(3)) -> np.ndarray:
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, -1.0])
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], -1)
    c2w[:3, 3] = eye
    return c2w


def _scene(seed=0):
    g = np.random.default_rng(seed)
    names = ["b_10.png", "a_02.png", "c_00.png", "a_01.png", "b_03.png", "d.png"]
    c2w = [_look_at(np.array([4 * np.cos(a), 4 * np.sin(a), 1.0 + 0.1 * k]))
           for k, a in enumerate(np.linspace(0, 2 * np.pi, len(names), endpoint=False))]
    images = {}  # image id -> (qvec wxyz, tvec, camera id, name, c2w)
    for k, (name, m) in enumerate(zip(names, c2w)):
        w2c = np.linalg.inv(m)
        qx, qy, qz, qw = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        images[100 - 7 * k] = (np.array([qw, qx, qy, qz]) * (-1 if k % 2 else 1), w2c[:3, 3], 3 if k % 2 else 9, name, m)
    pts = g.uniform(-0.6, 0.6, (40, 3))
    rgb = g.integers(0, 256, (40, 3))
    return images, pts, rgb


def write_txt(folder: Path, cameras, images, pts, rgb) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text("# Camera list\n" + "".join(
        f"{cid} {m} {W} {H} {' '.join(repr(float(x)) for x in p)}\n" for cid, (m, p) in cameras.items()))
    lines = ["# Image list with two lines of data per image:"]
    for iid, (q, t, cid, name, _) in images.items():
        lines.append(f"{iid} {' '.join(repr(float(x)) for x in q)} {' '.join(repr(float(x)) for x in t)} {cid} {name}")
        lines.append("" if iid % 2 else "10.5 20.5 -1 11.0 3.5 4")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "points3D.txt").write_text("# 3D point list\n" + "".join(
        f"{i + 1} {x} {y} {z} {r} {gg} {b} 0.5" + " 100 0" * (i % 3) + "\n" for i, ((x, y, z), (r, gg, b)) in enumerate(zip(pts, rgb))))


def write_bin(folder: Path, cameras, images, pts, rgb) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    b = struct.pack("<Q", len(cameras))
    for cid, (m, p) in cameras.items():
        b += struct.pack("<iiQQ", cid, MODEL_IDS[m], W, H) + struct.pack(f"<{len(p)}d", *p)
    (folder / "cameras.bin").write_bytes(b)
    b = struct.pack("<Q", len(images))
    for iid, (q, t, cid, name, _) in images.items():
        n2d = iid % 3
        b += struct.pack("<i4d3di", iid, *q, *t, cid) + name.encode() + b"\0" + struct.pack("<Q", n2d)
        b += struct.pack("<ddq", 1.5, 2.5, -1) * n2d
    (folder / "images.bin").write_bytes(b)
    b = struct.pack("<Q", len(pts))
    for i, (p, c) in enumerate(zip(pts, rgb)):
        b += struct.pack("<Q3d3Bd", i + 1, *p, *map(int, c), 0.5) + struct.pack("<Q", i % 4) + struct.pack("<ii", 5, 6) * (i % 4)
    (folder / "points3D.bin").write_bytes(b)


def write_images(root: Path, images, folder="images", factor=1) -> None:
    g = np.random.default_rng(1)
    (root / folder).mkdir(parents=True, exist_ok=True)
    for _, _, _, name, _ in images.values():
        iio.imwrite(root / folder / name, g.integers(0, 256, (H // factor, W // factor, 3), dtype=np.uint8))


def _opencv_pixels(cam, c2w, X) -> np.ndarray:
    """Expected pixels of world points, from the raw COLMAP parameters (float64, OpenCV model)."""
    model, p = cam
    w2c = np.linalg.inv(c2w)
    Xc = X @ w2c[:3, :3].T + w2c[:3, 3]
    x, y = Xc[:, 0] / Xc[:, 2], Xc[:, 1] / Xc[:, 2]
    fx, fy, cx, cy = p[:4]
    if model == "OPENCV":
        k1, k2, p1, p2 = p[4:]
        r2 = x * x + y * y
        rad = 1 + k1 * r2 + k2 * r2 * r2
        x, y = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([fx * x + cx, fy * y + cy], -1)


@pytest.mark.parametrize("kind", ["txt", "bin"])
def test_colmap_round_trip(tmp_path, kind):
    images, pts, rgb = _scene()
    (write_txt if kind == "txt" else write_bin)(tmp_path / "sparse" / "0", CAMERAS, images, pts, rgb)
    write_images(tmp_path, images)
    assert detect_format(tmp_path) == "colmap"
    s = load(tmp_path)
    by_name = {v[3]: v for v in images.values()}
    assert s.names == sorted(by_name)
    assert s.splits["test"].tolist() == [0] and s.splits["train"].tolist() == [1, 2, 3, 4, 5]
    assert s.cameras.model == "opencv"  # the pinhole camera joins with zero distortion
    ref_c2w = torch.tensor(np.stack([by_name[n][4] for n in s.names])).float()
    assert torch.allclose(s.cameras.c2w, ref_c2w, atol=1e-5)
    assert torch.allclose(s.points, torch.tensor(pts).float(), atol=1e-6)
    assert torch.equal(s.point_colors, torch.tensor(rgb, dtype=torch.uint8))
    assert torch.allclose(s.bounds, torch.quantile(torch.tensor(pts), torch.tensor([0.01, 0.99], dtype=torch.float64), 0).float())
    for i, name in enumerate(s.names):
        cam = CAMERAS[by_name[name][2]]
        uv_ref = _opencv_pixels(cam, by_name[name][4], pts)
        if cam[0] == "PINHOLE":  # loaded K and c2w project the points to the expected pixels
            w2c = torch.linalg.inv(s.cameras.c2w[i].double())
            Xc = torch.tensor(pts) @ w2c[:3, :3].T + w2c[:3, 3]
            uv = (Xc @ s.cameras.K[i].double().T)[:, :2] / Xc[:, 2:]
            assert np.abs(uv.numpy() - uv_ref).max() < 1e-3
        else:
            assert torch.allclose(s.cameras.distortion[i], torch.tensor([-0.12, 0.03, 0, 0, 0.002, -0.001]))
        rays = pixel_rays(s.cameras, torch.full((len(pts),), i), torch.tensor(uv_ref[:, 0]).float(),
                          torch.tensor(uv_ref[:, 1]).float())
        v = torch.tensor(pts) - rays.origins.double()
        d = rays.directions.double()
        assert (v - (v * d).sum(-1, keepdim=True) * d).norm(dim=-1).max() < 1e-4


def test_colmap_images_k_and_downscale(tmp_path):
    images, pts, rgb = _scene()
    write_bin(tmp_path / "sparse", {3: CAMERAS[3], 9: ("PINHOLE", [70.0, 72.0, 31.5, 24.5])}, images, pts, rgb)
    write_images(tmp_path, images)
    write_images(tmp_path, images, "images_2", 2)
    full, half, quarter = (load(tmp_path, downscale=k) for k in (1, 2, 4))
    assert full.cameras.model == "pinhole" and full.cameras.distortion is None
    assert half.images[0].shape == (24, 32, 3) and half.protocol["images"] == "images_2"
    assert torch.allclose(half.cameras.K[:, :2], full.cameras.K[:, :2] / 2)
    assert quarter.images[0].shape == (12, 16, 3) and torch.allclose(quarter.cameras.K[:, :2], full.cameras.K[:, :2] / 4)
    # downscale 4 reads images_2 and averages 2x2 blocks of it
    ref = half.images[2].double().reshape(12, 2, 16, 2, 3).mean((1, 3))
    assert (quarter.images[2].double() - ref).abs().max() <= 0.5
    assert int(quarter.cameras.width[0]) == 16 and int(quarter.cameras.height[0]) == 12


@pytest.mark.parametrize("cams,problem", [
    ({3: ("FOV", [70.0, 72.0, 31.5, 24.5, 0.3])}, "cannot be represented"),
    ({3: ("FULL_OPENCV", [70.0, 72.0, 31.5, 24.5, 0.1, 0, 0, 0, 0, 0.2, 0, 0])}, "cannot be represented"),
    ({3: ("OPENCV", [80.0, 79.0, 33.0, 23.0, -0.1, 0, 0, 0]), 9: ("OPENCV_FISHEYE", [80.0, 79.0, 33.0, 23.0, 0.1, 0, 0, 0])},
     "lens models"),
])
def test_colmap_unrepresentable_models(tmp_path, cams, problem):
    images, pts, rgb = _scene()
    ids = list(cams)
    images = {k: (q, t, ids[j % len(ids)], n, m) for j, (k, (q, t, _, n, m)) in enumerate(images.items())}
    write_txt(tmp_path / "sparse" / "0", cams, images, pts, rgb)
    write_images(tmp_path, images)
    with pytest.raises(DataError) as e:
        load(tmp_path)
    assert problem in str(e.value) and "cameras.txt" in str(e.value)


def test_colmap_model_mapping_keeps_parameters(tmp_path):
    from fieldforge.scenes.loaders.colmap_files import ColmapCamera, intrinsics
    f = tmp_path / "cameras.bin"
    cases = {
        "SIMPLE_PINHOLE": ([50.0, 30, 20], [50, 50, 30, 20], [0] * 6, "pinhole"),
        "SIMPLE_RADIAL": ([50.0, 30, 20, 0.1], [50, 50, 30, 20], [0.1, 0, 0, 0, 0, 0], "opencv"),
        "RADIAL": ([50.0, 30, 20, 0.1, 0.2], [50, 50, 30, 20], [0.1, 0.2, 0, 0, 0, 0], "opencv"),
        "FULL_OPENCV": ([50.0, 51, 30, 20, 0.1, 0.2, 0.3, 0.4, 0.5, 0, 0, 0], [50, 51, 30, 20], [0.1, 0.2, 0.5, 0, 0.3, 0.4], "opencv"),
        "OPENCV_FISHEYE": ([50.0, 51, 30, 20, 0.1, 0.2, 0.3, 0.4], [50, 51, 30, 20], [0.1, 0.2, 0.3, 0.4, 0, 0], "opencv_fisheye"),
        "RADIAL_FISHEYE": ([50.0, 30, 20, 0.1, 0.2], [50, 50, 30, 20], [0.1, 0.2, 0, 0, 0, 0], "opencv_fisheye"),
        "THIN_PRISM_FISHEYE": ([50.0, 51, 30, 20, 0.1, 0.2, 0, 0, 0.3, 0.4, 0, 0], [50, 51, 30, 20], [0.1, 0.2, 0.3, 0.4, 0, 0], "opencv_fisheye"),
    }
    for model, (params, k, d, kind) in cases.items():
        assert intrinsics(f, 1, ColmapCamera(model, W, H, np.array(params))) == (k, d, kind), model


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
@pytest.mark.parametrize("cut", [-5, 5])
def test_colmap_truncated_or_padded_binary(tmp_path, name, cut):
    images, pts, rgb = _scene()
    write_bin(tmp_path / "sparse" / "0", CAMERAS, images, pts, rgb)
    write_images(tmp_path, images)
    p = tmp_path / "sparse" / "0" / name
    data = p.read_bytes()
    p.write_bytes(data[:cut] if cut < 0 else data + b"\0" * cut)
    with pytest.raises(DataError) as e:
        load(tmp_path)
    assert name in str(e.value) and ("truncated" in str(e.value) or "trailing" in str(e.value))


def test_colmap_missing_image_file(tmp_path):
    images, pts, rgb = _scene()
    write_txt(tmp_path / "sparse" / "0", CAMERAS, images, pts, rgb)
    write_images(tmp_path, images)
    (tmp_path / "images" / "c_00.png").unlink()
    with pytest.raises(DataError) as e:
        load(tmp_path)
    assert "c_00.png" in str(e.value) and "not found" in str(e.value)
