"""LLFF forward-facing scenes: ``poses_bounds.npy`` and ``images/`` or ``images_K/``.

Each row of poses_bounds.npy is a row-major 3x5 [R | t | (h, w, f)] camera-to-world with
rotation columns [down, right, back] for the full-resolution images, plus per-view (near,
far) depths. As NeRF's loader does: translations and bounds are scaled by
sc = 1 / (0.75 min(near)), and all poses are recentred on the average pose (so the average
camera sits at the origin looking along world -z in OpenGL terms; NDC rays assume this
frame). Cameras are converted to OpenCV axes [right, down, forward] = [c1, c0, -c2]. The
principal point is the image centre and f is scaled by (image width / w).

Images are those of ``images_K/`` for the largest K dividing ``downscale`` (else
``images/``), sorted by name; every 8th (0, 8, ...) is test. Seed points come from a COLMAP
``sparse/0/points3D`` when present, transformed like the poses. near = min(near) * sc and
far = max(far) * sc / cos(corner ray angle) (Euclidean distances for unit directions).
Bounds: the seed points' central 98% per axis, else the box of every view frustum's corners
between near and far.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fieldforge.errors import DataError
from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.images import read_images
from fieldforge.scenes.loaders.build import bounds_from_points, finish, holdout_splits, image_folder, matrices
from fieldforge.scenes.loaders.colmap_files import read_points
from fieldforge.scenes.scene import Scene

BD_FACTOR = 0.75
EXTENSIONS = (".png", ".jpg", ".jpeg")


def detect(path: Path) -> bool:
    return (path / "poses_bounds.npy").is_file()


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def average_pose(c2w_gl: torch.Tensor) -> torch.Tensor:
    """NeRF's ``poses_avg``: mean centre, summed back (z) and up (y) axes, OpenGL 4x4."""
    z = _normalize(c2w_gl[:, :3, 2].sum(0))
    up = c2w_gl[:, :3, 1].sum(0)
    x = _normalize(torch.linalg.cross(up, z))
    y = _normalize(torch.linalg.cross(z, x))
    avg = torch.eye(4, dtype=c2w_gl.dtype)
    avg[:3, 0], avg[:3, 1], avg[:3, 2], avg[:3, 3] = x, y, z, c2w_gl[:, :3, 3].mean(0)
    return avg


def load(root: Path, downscale: int = 1) -> Scene:
    src = root / "poses_bounds.npy"
    try:
        arr = np.load(src, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(src, f"cannot read ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0:
        raise DataError(src, f"expected an N x 17 array, got shape {list(arr.shape)}")
    data = matrices(src, arr, "poses_bounds", (17,))
    poses, bds = data[:, :15].reshape(-1, 3, 5), data[:, 15:]
    H, W, F = (float(v) for v in poses[0, :, 4])
    if min(H, W, F) <= 0 or (bds <= 0).any():
        raise DataError(src, "hwf and near/far bounds must be positive")
    folder, m = image_folder(root, downscale)
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS), key=lambda p: p.name)
    if len(paths) != len(data):
        raise DataError(folder, f"has {len(paths)} images but {src.name} has {len(data)} poses")
    images = read_images(paths)
    for p, img in zip(paths, images):
        if abs(img.shape[1] - W / m) >= 1 or abs(img.shape[0] - H / m) >= 1:
            raise DataError(p, f"image is {img.shape[1]}x{img.shape[0]} but {src.name} says {W:g}x{H:g}"
                               + (f" (expected 1/{m} of that in {folder.name})" if m > 1 else ""))
    sc = 1.0 / (float(bds.min()) * BD_FACTOR)
    R = poses[:, :, :3]
    c2w_gl = torch.eye(4, dtype=torch.float64).repeat(len(data), 1, 1)
    c2w_gl[:, :3, :3] = torch.stack([R[:, :, 1], -R[:, :, 0], R[:, :, 2]], -1)  # [right, up, back]
    c2w_gl[:, :3, 3] = poses[:, :, 3] * sc
    to_avg = torch.linalg.inv(average_pose(c2w_gl))
    c2w = to_avg @ c2w_gl
    c2w[:, :3, 1:3] *= -1  # OpenGL -> OpenCV camera axes
    w = torch.tensor([img.shape[1] for img in images], dtype=torch.float64)
    h = torch.tensor([img.shape[0] for img in images], dtype=torch.float64)
    f = F * w / W
    K = torch.zeros(len(data), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, w / 2, h / 2, 1.0
    cams = Cameras(K=K.float(), c2w=c2w.float(), width=w.long(), height=h.long())
    near = float(bds.min()) * sc
    far = float(bds.max()) * sc * math.sqrt(1 + (W / 2 / F) ** 2 + (H / 2 / F) ** 2)
    points = colors = None
    pts_file = next((root / "sparse" / "0" / f"points3D{e}" for e in (".bin", ".txt")
                     if (root / "sparse" / "0" / f"points3D{e}").is_file()), None)
    if pts_file is not None:
        points, colors = read_points(pts_file)
        p = points.double() * sc
        points = (p @ to_avg[:3, :3].T + to_avg[:3, 3]).float()
    if points is not None and len(points):
        bounds, rule = bounds_from_points(points), "central 98% of seed points"
    else:
        corners = _frustum_corners(c2w, K, w, h, near, far)
        bounds, rule = torch.stack([corners.min(0).values, corners.max(0).values]).float(), "view frustums near..far"
    splits, protocol = holdout_splits(len(images))
    protocol.update(downscale=downscale, images=folder.name, scale=sc, recentred=True, bounds=rule,
                    rays="forward-facing: NeRF uses NDC rays with near plane 1")
    return finish(root, "llff", cams, images, [p.name for p in paths], splits, downscale // m, bounds=bounds,
                  near=near, far=far, image_paths=paths, points=points, point_colors=colors, protocol=protocol,
                  source=src)


def _frustum_corners(c2w, K, w, h, near, far) -> torch.Tensor:
    """World points [N*8, 3] at the image corners at Euclidean distances near and far."""
    u = torch.stack([torch.zeros_like(w), w, torch.zeros_like(w), w], -1)  # [N, 4]
    v = torch.stack([torch.zeros_like(h), torch.zeros_like(h), h, h], -1)
    d = torch.stack([(u - K[:, 0, 2:3]) / K[:, 0, 0:1], (v - K[:, 1, 2:3]) / K[:, 1, 1:2], torch.ones_like(u)], -1)
    d = d / d.norm(dim=-1, keepdim=True)
    d = torch.einsum("nij,nkj->nki", c2w[:, :3, :3], d)
    o = c2w[:, None, :3, 3]
    return torch.cat([o + near * d, o + far * d], 1).reshape(-1, 3)
