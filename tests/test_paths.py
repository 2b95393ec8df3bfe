"""Camera paths: look-at frames, orbits and spirals from training cameras, keyframe JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldforge.errors import DataError
from fieldforge.scenes import Cameras, Scene
from fieldforge.scenes import paths

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "default-scene"


def _bundled_train_cameras() -> Cameras:
    """The bundled scene's train cameras read from its Blender JSON (OpenGL -> OpenCV here)."""
    meta = json.loads((ASSETS / "transforms_train.json").read_text())
    c2w = np.stack([np.asarray(f["transform_matrix"]) for f in meta["frames"]]) @ np.diag([1.0, -1, -1, 1])
    f = 50.0 / math.tan(0.5 * meta["camera_angle_x"])
    K = torch.tensor([[f, 0, 50.0], [0, f, 50.0], [0, 0, 1]]).expand(len(c2w), 3, 3)
    return Cameras(K=K.clone(), c2w=torch.tensor(c2w, dtype=torch.float32),
                   width=torch.full((len(c2w),), 100), height=torch.full((len(c2w),), 100))


def _cam_coords(c2w: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """World points [N, 3] in each camera's OpenCV frame via the inverse matrix."""
    w2c = torch.linalg.inv(c2w.double())
    return torch.einsum("nij,nj->ni", w2c[:, :3, :3], pts.double()) + w2c[:, :3, 3]


def _rotation(axis, angle) -> np.ndarray:
    """Rodrigues' formula."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    A = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * A + (1 - math.cos(angle)) * A @ A


def test_look_at_frames():
    g = torch.Generator().manual_seed(0)
    eyes = torch.randn(50, 3, generator=g, dtype=torch.float64) * 3
    target = torch.randn(3, generator=g, dtype=torch.float64)
    up = torch.tensor([0.2, -0.1, 1.0], dtype=torch.float64)
    c2w = paths.look_at(eyes, target, up)
    R = c2w[:, :3, :3]
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3, dtype=torch.float64).expand(50, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))
    local = _cam_coords(c2w, target.expand(50, 3))
    assert torch.allclose(local[:, :2], torch.zeros(50, 2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(local[:, 2], (target - eyes).norm(dim=-1))
    up_cam = torch.einsum("nji,j->ni", R, up)  # world up in camera axes
    assert (up_cam[:, 1] < 0).all()  # points up in the image (OpenCV y is down)
    assert torch.allclose(up_cam[:, 0], torch.zeros(50, dtype=torch.float64), atol=1e-12)  # no roll
    with pytest.raises(ValueError, match="parallel"):
        paths.look_at(torch.tensor([[0.0, 0, 2]]), torch.zeros(3), torch.tensor([0.0, 0, 1]))


def test_orbit_from_training_cameras():
    cams = _bundled_train_cameras()
    n = 12
    orb = paths.orbit(cams, n)
    assert len(orb) == n and orb.times is None
    centers = cams.centers.double()
    radius = centers[:, :2].norm(dim=-1).mean()  # cameras look at the origin with +z up
    height = centers[:, 2].mean()
    eyes = orb.centers.double()
    torch.testing.assert_close(eyes[:, 2], height.expand(n), atol=1e-5, rtol=0)
    torch.testing.assert_close(eyes[:, :2].norm(dim=-1), radius.expand(n), atol=1e-5, rtol=0)
    az = torch.atan2(eyes[:, 1], eyes[:, 0])
    steps = torch.remainder(az.roll(-1) - az, 2 * math.pi)
    torch.testing.assert_close(steps, torch.full((n,), 2 * math.pi / n, dtype=torch.float64), atol=1e-5, rtol=0)
    assert float(az[0]) == pytest.approx(math.atan2(centers[0, 1], centers[0, 0]), abs=1e-5)
    # looks at the origin without roll; intrinsics of the first training camera
    local = _cam_coords(orb.c2w, torch.zeros(n, 3))
    assert local[:, :2].abs().max() < 1e-5
    assert orb.c2w[:, 2, 0].abs().max() < 1e-6
    assert torch.equal(orb.K, cams.K[:1].expand(n, 3, 3)) and (orb.width == 100).all()
    # a dynamic scene sweeps time; an explicit time is held
    dyn = Cameras(K=cams.K, c2w=cams.c2w, width=cams.width, height=cams.height, times=torch.rand(len(cams)))
    torch.testing.assert_close(paths.orbit(dyn, 5).times, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(paths.orbit(cams, 3, times=0.3).times, torch.full((3,), 0.3))


def test_estimate_up_is_exact_for_roll_free_cameras():
    g = torch.Generator().manual_seed(2)
    up = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    up = up / up.norm()
    # cameras on one side only: their mean image-up is tilted, the estimate is not
    a = torch.linalg.cross(up, torch.tensor([1.0, 0, 0], dtype=torch.float64))
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    az = torch.rand(20, generator=g, dtype=torch.float64) * 2.0
    el = 0.2 + torch.rand(20, generator=g, dtype=torch.float64)
    eyes = 3 * (torch.cos(el)[:, None] * (torch.cos(az)[:, None] * a + torch.sin(az)[:, None] * b)
                + torch.sin(el)[:, None] * up)
    c2w = paths.look_at(eyes, torch.zeros(3, dtype=torch.float64), up)
    cams = Cameras(K=torch.eye(3).expand(20, 3, 3).clone(), c2w=c2w, width=torch.full((20,), 10),
                   height=torch.full((20,), 10))
    mean_img_up = -c2w[:, :3, 1].mean(0)
    assert float(mean_img_up @ up / mean_img_up.norm()) < 0.99
    torch.testing.assert_close(paths.estimate_up(cams), up, atol=1e-10, rtol=0)


def _forward_facing() -> Cameras:
    """12 cameras on the plane z = 0 looking along world +z, image-up = world -y."""
    g = torch.Generator().manual_seed(1)
    pos = torch.zeros(12, 3)
    pos[:, 0] = torch.rand(12, generator=g) * 2 - 1
    pos[:, 1] = torch.rand(12, generator=g) * 0.6 - 0.3
    c2w = torch.eye(4).repeat(12, 1, 1)
    c2w[:, :3, 3] = pos
    K = torch.tensor([[50.0, 0, 40], [0, 50, 30], [0, 0, 1]]).expand(12, 3, 3).clone()
    return Cameras(K=K, c2w=c2w, width=torch.full((12,), 80), height=torch.full((12,), 60))


def test_spiral_llff_style():
    cams = _forward_facing()
    scene = Scene(cameras=cams, images=[torch.zeros(60, 80, 3, dtype=torch.uint8)] * 12,
                  names=[str(i) for i in range(12)], splits={"train": torch.arange(12)},
                  bounds=torch.tensor([[-2.0, -2, 1], [2, 2, 20]]), near=2.0, far=20.0)
    n = 40
    sp = paths.spiral(scene, n, n_rotations=2, zrate=0.5)
    mean_c = cams.centers.double().mean(0)
    rx = torch.quantile((cams.centers[:, 0].double() - mean_c[0]).abs(), 0.9)
    ry = torch.quantile((cams.centers[:, 1].double() - mean_c[1]).abs(), 0.9)
    focus = 1 / (0.25 / (0.9 * 2.0) + 0.75 / (5 * 20.0))
    theta = torch.arange(n, dtype=torch.float64) * (4 * math.pi / n)
    # the mean camera frame equals the world frame here (x right, y down, z forward)
    expected = torch.stack([mean_c[0] + rx * torch.cos(theta), mean_c[1] + ry * torch.sin(theta),
                            torch.zeros(n, dtype=torch.float64)], -1)
    torch.testing.assert_close(sp.centers.double(), expected, atol=1e-5, rtol=0)
    target = (mean_c + torch.tensor([0, 0, focus], dtype=torch.float64)).expand(n, 3)
    assert _cam_coords(sp.c2w, target)[:, :2].abs().max() < 1e-4
    assert sp.c2w[:, 1, 0].abs().max() < 1e-6  # camera x stays horizontal (world up is -y)
    # without near/far, cameras that converge give the focus depth of their axes' meeting point
    c2w = paths.look_at(cams.centers.double(), torch.tensor([0.0, 0, 7], dtype=torch.float64),
                        torch.tensor([0.0, -1, 0], dtype=torch.float64))
    conv = Cameras(K=cams.K, c2w=c2w, width=cams.width, height=cams.height)
    sp2 = paths.spiral(conv, 8, radii=torch.zeros(3))
    fwd = c2w[:, :3, 2].mean(0)
    fwd = fwd / fwd.norm()
    look = mean_c + ((torch.tensor([0.0, 0, 7], dtype=torch.float64) - mean_c) @ fwd) * fwd
    assert _cam_coords(sp2.c2w, look.expand(8, 3))[:, :2].abs().max() < 1e-5
    torch.testing.assert_close(sp2.centers.double(), mean_c.expand(8, 3), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="focus"):
        paths.spiral(cams, 8)  # parallel axes, no bounds


def test_with_resolution_keeps_vertical_view():
    cams = _forward_facing()[[0, 1]]
    pts = torch.tensor([[0.3, -0.2, 5.0], [-1.0, 0.4, 3.0]])
    big = paths.with_resolution(cams, 160, 90)
    for c, (W, H) in ((cams, (80, 60)), (big, (160, 90))):
        uv = torch.einsum("nij,nj->ni", c.K.double(), _cam_coords(c.c2w, pts))
        uv = uv[:, :2] / uv[:, 2:]
        if W == 80:
            ref = uv
        else:
            torch.testing.assert_close(uv[:, 1] / H, ref[:, 1] / 60)
            torch.testing.assert_close((uv[:, 0] - W / 2) / H, (ref[:, 0] - 40) / 60)
    assert big.width.tolist() == [160, 160] and big.height.tolist() == [90, 90]


@pytest.mark.parametrize("convention", ["opencv", "opengl"])
def test_save_load_round_trip(tmp_path, convention):
    cams = _bundled_train_cameras()[[0, 5, 9]]
    cams = Cameras(K=cams.K, c2w=cams.c2w, width=cams.width, height=cams.height,
                   times=torch.tensor([0.0, 0.4, 1.0]))
    f = paths.save_path(tmp_path / "p.json", cams, convention=convention)
    raw = json.loads(f.read_text())
    gl = np.asarray(raw["keyframes"][1]["c2w"])
    expect = cams.c2w[1].double().numpy()
    if convention == "opengl":
        expect = expect @ np.diag([1.0, -1, -1, 1])
    np.testing.assert_allclose(gl, expect, atol=1e-7)
    back = paths.load_path(f)
    torch.testing.assert_close(back.c2w, cams.c2w, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.K, cams.K, atol=1e-4, rtol=0)
    torch.testing.assert_close(back.times, cams.times)
    assert back.width.tolist() == [100] * 3


def test_keyframe_interpolation(tmp_path):
    axis = [0.3, 1.0, -0.2]
    R1 = _rotation(axis, math.radians(80))
    m0, m1 = np.eye(4), np.eye(4)
    m0[:3, 3] = [0, 0, -4]
    m1[:3, :3], m1[:3, 3] = R1, [2, 1, -3]
    data = {"convention": "opengl", "width": 64, "height": 48, "frames": 5,
            "keyframes": [{"c2w": m0.tolist(), "fov": 40, "time": 0.0},
                          {"c2w": m1.tolist(), "fov": 60, "time": 1.0}]}
    f = tmp_path / "path.json"
    f.write_text(json.dumps(data))
    cams = paths.load_path(f)
    assert len(cams) == 5
    flip = np.diag([1.0, -1, -1, 1])
    for k in range(5):
        s = k / 4
        expect = np.eye(4)
        expect[:3, :3] = _rotation(axis, math.radians(80) * s)
        expect[:3, 3] = (1 - s) * m0[:3, 3] + s * m1[:3, 3]
        np.testing.assert_allclose(cams.c2w[k].double().numpy(), expect @ flip, atol=1e-6)
        fov = math.radians(40 + 20 * s)
        assert float(cams.K[k, 1, 1]) == pytest.approx(24 / math.tan(fov / 2), rel=1e-6)
        # the horizontal angle of view is interpolated too (square pixels at the keyframes)
        fov_x = [2 * math.atan(32 / (24 / math.tan(math.radians(a) / 2))) for a in (40, 60)]
        fx = 32 / math.tan(((1 - s) * fov_x[0] + s * fov_x[1]) / 2)
        assert float(cams.K[k, 0, 0]) == pytest.approx(fx, rel=1e-6)
        assert float(cams.times[k]) == pytest.approx(s)
        assert cams.K[k, 0, 2] == 32 and cams.K[k, 1, 2] == 24
    one = paths.load_path(f, n_frames=1)
    np.testing.assert_allclose(one.c2w[0].double().numpy(), m0 @ flip, atol=1e-7)


BAD = {
    "not json": ("{oops", "invalid JSON"),
    "no keyframes": ({"width": 4, "height": 4}, "keyframes"),
    "no size": ({"keyframes": [{"c2w": np.eye(4).tolist(), "fov": 50}]}, "width"),
    "bad convention": ({"convention": "blender", "width": 4, "height": 4,
                        "keyframes": [{"c2w": np.eye(4).tolist(), "fov": 50}]}, "convention"),
    "3x3": ({"width": 4, "height": 4, "keyframes": [{"c2w": np.eye(3).tolist(), "fov": 50}]}, "4x4"),
    "scaled": ({"width": 4, "height": 4, "keyframes": [{"c2w": np.diag([2.0, 2, 2, 1]).tolist(), "fov": 50}]},
               "rotation"),
    "no fov": ({"width": 4, "height": 4, "keyframes": [{"c2w": np.eye(4).tolist()}]}, "fov"),
    "fov range": ({"width": 4, "height": 4, "keyframes": [{"c2w": np.eye(4).tolist(), "fov": 190}]}, "fov"),
    "some times": ({"width": 4, "height": 4, "keyframes": [{"c2w": np.eye(4).tolist(), "fov": 50, "time": 0},
                                                         {"c2w": np.eye(4).tolist(), "fov": 50}]}, "time"),
    "time range": ({"width": 4, "height": 4,
                    "keyframes": [{"c2w": np.eye(4).tolist(), "fov": 50, "time": 1.5}]}, "[0, 1]"),
    "string focal": ({"width": 4, "height": 4, "keyframes": [{"c2w": np.eye(4).tolist(), "fx": "3"}]}, "fx"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_path_files(tmp_path, case):
    content, needle = BAD[case]
    f = tmp_path / "bad_path.json"
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError) as err:
        paths.load_path(f)
    msg = str(err.value)
    assert "bad_path.json" in msg and needle in msg and "\n" not in msg
    with pytest.raises(DataError, match="not found"):
        paths.load_path(tmp_path / "missing.json")
