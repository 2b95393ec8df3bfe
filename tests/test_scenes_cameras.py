"""Lens models and the projection <-> ray-generation contract the loaders rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldforge.scenes.cameras import Cameras, distort, undistort
from fieldforge.scenes.rays import pixel_rays

OPENCV = [-0.28, 0.09, -0.015, 0.0, 1.2e-3, -8e-4]  # k1 k2 k3 k4 p1 p2 (a wide-angle lens)
FISHEYE = [0.05, -0.01, 0.003, -0.0005, 0.0, 0.0]


def _opencv_ref(xy: np.ndarray, d) -> np.ndarray:
    """OpenCV's radial-tangential model in float64 (cv::projectPoints, k4 unused)."""
    k1, k2, k3, _, p1, p2 = d
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    rad = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    return np.stack([x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], -1)


def _fisheye_ref(xy: np.ndarray, d) -> np.ndarray:
    """OpenCV's fisheye (equidistant) model in float64 (cv::fisheye::projectPoints)."""
    k1, k2, k3, k4 = d[:4]
    r = np.linalg.norm(xy, axis=-1)
    th = np.arctan(r)
    thd = th * (1 + k1 * th**2 + k2 * th**4 + k3 * th**6 + k4 * th**8)
    return xy * (thd / r)[:, None]


@pytest.mark.parametrize("model,d,ref", [("opencv", OPENCV, _opencv_ref), ("opencv_fisheye", FISHEYE, _fisheye_ref)])
def test_distort_matches_opencv_formula_and_undistort_inverts(model, d, ref):
    g = torch.Generator().manual_seed(1)
    xy = (torch.rand(2000, 2, generator=g, dtype=torch.float64) - 0.5) * 1.2  # up to ~40 deg off-axis
    dist = torch.tensor(d, dtype=torch.float64).expand(len(xy), 6)
    xd = distort(xy, dist, model)
    np.testing.assert_allclose(xd.numpy(), ref(xy.numpy(), d), rtol=0, atol=1e-12)
    back = undistort(xd, dist, model)
    assert (back - xy).abs().max() < 1e-9
    assert (xd - xy).abs().max() > 1e-3  # the lens really distorts


def _project(K: np.ndarray, c2w: np.ndarray, X: np.ndarray, model="pinhole", d=None) -> np.ndarray:
    """Pixel (u, v) of world points X [P, 3] by K and the inverse of c2w (OpenCV axes), float64."""
    w2c = np.linalg.inv(c2w)
    Xc = X @ w2c[:3, :3].T + w2c[:3, 3]
    xy = Xc[:, :2] / Xc[:, 2:]
    if model == "opencv":
        xy = _opencv_ref(xy, d)
    elif model == "opencv_fisheye":
        xy = _fisheye_ref(xy, d)
    return np.stack([K[0, 0] * xy[:, 0] + K[0, 2], K[1, 1] * xy[:, 1] + K[1, 2]], -1)


def _random_pose(g: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(g.normal(size=(3, 3)))
    c2w = np.eye(4)
    c2w[:3, :3] = q * np.sign(np.linalg.det(q))
    c2w[:3, 3] = g.normal(size=3)
    return c2w


@pytest.mark.parametrize("model,d", [("pinhole", [0.0] * 6), ("opencv", OPENCV), ("opencv_fisheye", FISHEYE)])
def test_projected_point_is_hit_by_pixel_ray(model, d):
    """A point projected to (u, v) by K and c2w lies on pixel_rays(u, v) - ties the loaders'
    conventions (OpenCV axes, pixel corner at (0, 0)) to ray generation."""
    g = np.random.default_rng(0)
    c2w = _random_pose(g)
    K = np.array([[300.0, 0, 161.3], [0, 290.0, 118.7], [0, 0, 1]])
    Xc = np.stack([g.uniform(-0.5, 0.5, 64), g.uniform(-0.4, 0.4, 64), g.uniform(1, 4, 64)], -1)
    X = Xc @ c2w[:3, :3].T + c2w[:3, 3]
    uv = _project(K, c2w, X, model, d)
    cams = Cameras(K=torch.tensor(K[None]).float(), c2w=torch.tensor(c2w[None]).float(), width=[320], height=[240],
                   model=model, distortion=torch.tensor([d]).float())
    rays = pixel_rays(cams, torch.zeros(64, dtype=torch.long), torch.tensor(uv[:, 0]).float(), torch.tensor(uv[:, 1]).float())
    o, dirs = rays.origins.double().numpy(), rays.directions.double().numpy()
    v = X - o
    miss = np.linalg.norm(v - (v * dirs).sum(-1, keepdims=True) * dirs, axis=-1)
    assert miss.max() < 1e-5 * np.linalg.norm(v, axis=-1).max() * 10
    assert ((v * dirs).sum(-1) > 0).all()  # in front of the camera
