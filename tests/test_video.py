"""Frame writers (mp4 / gif / PNG folder) and the ``fieldforge render`` frame loop and verb."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldforge.apps.cli import main as cli
from fieldforge.apps.export import video as render_video
from fieldforge.apps.export.video import FrameWriter, output_kind
from fieldforge.scenes.images import to_uint8
from fieldforge.render.rasterize import render_gaussians
from fieldforge.scenes import Cameras, Scene

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "default-scene"


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    """Smooth, distinct float frames (video codecs are lossy on noise)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return [np.stack([xx, yy, np.full_like(xx, k / max(n - 1, 1))], -1) * 0.8 + 0.1 for k in range(n)]


def test_to_uint8_rounds_and_clamps():
    x = np.array([[[-0.2, 0.0, 0.3], [0.5 / 255, 1.2, 0.999]]])
    expected = np.floor(np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(torch.tensor(x)), expected)
    with pytest.raises(ValueError, match="H, W, 3"):
        to_uint8(np.zeros((4, 4)))
    assert [output_kind(p) for p in ("a.mp4", "b.GIF", "dir", "c.png")] == ["mp4", "gif", "png", "png"]


def _decode(mp4: Path) -> tuple[dict, list[np.ndarray]]:
    with imageio_v2.get_reader(mp4) as reader:
        return reader.get_meta_data(), [f for f in reader.iter_data()]


def test_png_folder_is_exact(tmp_path):
    frames = _frames(3, 7, 9)
    with FrameWriter(tmp_path / "out", fps=5) as w:
        for f in frames:
            w.append(torch.tensor(f))
    files = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in files] == ["00000.png", "00001.png", "00002.png"]
    for f, p in zip(frames, files):
        np.testing.assert_array_equal(iio.imread(p), np.floor(f * 255 + 0.5).astype(np.uint8))


def test_mp4_round_trip(tmp_path):
    frames = _frames(6, 33, 47)  # odd sizes: padded to even by repeating the last row/column
    out = tmp_path / "v.mp4"
    with FrameWriter(out, fps=12) as w:
        for f in frames:
            w.append(f)
    meta, decoded = _decode(out)
    assert meta["fps"] == pytest.approx(12) and meta["codec"] == "h264"
    assert len(decoded) == 6 and decoded[0].shape == (34, 48, 3)
    for f, d in zip(frames, decoded):
        ref = f * 255
        assert np.abs(d[:33, :47].astype(float) - ref).mean() < 3.0
        np.testing.assert_allclose(d[33, :47].astype(float), ref[32], atol=12)  # repeated row
    # frames are distinct and in order: the blue channel ramps
    blue = [d[..., 2].mean() for d in decoded]
    assert np.all(np.diff(blue) > 20)


def test_gif_round_trip(tmp_path):
    frames = _frames(4, 16, 20)
    out = tmp_path / "v.gif"
    with FrameWriter(out, fps=10) as w:
        for f in frames:
            w.append(f)
    g = iio.imread(out, index=None)
    assert g.shape[:3] == (4, 16, 20)
    assert iio.immeta(out)["duration"] == pytest.approx(100)
    for f, d in zip(frames, g):
        assert np.abs(d[..., :3].astype(float) - f * 255).mean() < 6.0


def _bundled_train_cameras() -> Cameras:
    meta = json.loads((ASSETS / "transforms_train.json").read_text())
    c2w = np.stack([np.asarray(f["transform_matrix"]) for f in meta["frames"]]) @ np.diag([1.0, -1, -1, 1])
    f = 50.0 / math.tan(0.5 * meta["camera_angle_x"])
    n = len(c2w)
    K = torch.tensor([[f, 0, 50.0], [0, f, 50.0], [0, 0, 1]]).expand(n, 3, 3).clone()
    return Cameras(K=K, c2w=torch.tensor(c2w, dtype=torch.float32),
                   width=torch.full((n,), 100), height=torch.full((n,), 100))


def _stub_render(cam: Cameras) -> torch.Tensor:
    """A flat frame whose colour encodes the camera centre (and time, in blue, when present)."""
    h, w = int(cam.height[0]), int(cam.width[0])
    c = cam.centers[0] / 10 + 0.5
    if cam.times is not None:
        c = torch.stack([c[0], c[1], cam.times[0]])
    return c.expand(h, w, 3).clone()


def _expected_orbit_eyes(cams: Cameras, n: int) -> np.ndarray:
    """Independent orbit: the training cameras look at the origin with +z up."""
    c = cams.centers.double().numpy()
    radius, height = np.linalg.norm(c[:, :2], axis=1).mean(), c[:, 2].mean()
    az = math.atan2(c[0, 1], c[0, 0]) + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(az), radius * np.sin(az), np.full(n, height)], -1)


def test_render_frames_with_stub(tmp_path):
    cams = _bundled_train_cameras()
    orbit = render_video.build_path("orbit", Scene(cameras=cams, images=[], names=[], splits={},
                                                   bounds=torch.zeros(2, 3)), 5, None)
    n = render_video.render_frames(_stub_render, orbit, tmp_path / "png", fps=10, progress=False)
    assert n == 5
    expected = _expected_orbit_eyes(cams, 5) / 10 + 0.5
    for k in range(5):
        img = iio.imread(tmp_path / "png" / f"{k:05d}.png")
        assert img.shape == (100, 100, 3)
        np.testing.assert_allclose(img[50, 50].astype(float), expected[k] * 255, atol=1.0)
    with pytest.raises(ValueError, match="expected"):
        render_video.render_frames(lambda c: torch.zeros(3, 3, 3), orbit, tmp_path / "bad", fps=10, progress=False)


class _StubMethod:
    device = torch.device("cpu")

    def render(self, cameras: Cameras, background: torch.Tensor) -> dict:
        rgb = _stub_render(cameras)
        rgb[0, 0] = background  # the verb passes the requested background through
        return {"rgb": rgb}


@pytest.fixture
def stub_run(monkeypatch, tmp_path):
    """``load_run`` replaced by a stub method on the bundled scene's training cameras."""
    import fieldforge.apps.training.run as run_module

    cams = _bundled_train_cameras()
    scene = Scene(cameras=cams, images=[], names=[], splits={"train": torch.arange(len(cams))},
                  bounds=torch.tensor([[-1.5] * 3, [1.5] * 3]))
    seen = {}

    def fake_load_run(run_dir, device="cpu"):
        seen["args"] = (Path(run_dir), device)
        return _StubMethod(), None, scene

    monkeypatch.setattr(run_module, "load_run", fake_load_run)
    (tmp_path / "run").mkdir()
    return tmp_path / "run", cams, seen


def test_render_verb_orbit_resolution_background(stub_run, tmp_path):
    run_dir, cams, seen = stub_run
    out = tmp_path / "frames"
    rc = cli.main(["render", str(run_dir), "--frames", "4", "--resolution", "30x20", "--background", "black",
                   "--device", "cpu", "-o", str(out)])
    assert rc == 0 and seen["args"] == (run_dir, "cpu")
    files = sorted(out.glob("*.png"))
    assert len(files) == 4
    expected = _expected_orbit_eyes(cams, 4) / 10 + 0.5
    for k, f in enumerate(files):
        img = iio.imread(f)
        assert img.shape == (20, 30, 3)
        assert (img[0, 0] == 0).all()
        np.testing.assert_allclose(img[10, 15].astype(float), expected[k] * 255, atol=1.0)


def test_render_verb_json_path_with_time(stub_run, tmp_path):
    run_dir, _, _ = stub_run
    m0, m1 = np.eye(4), np.eye(4)
    m0[:3, 3], m1[:3, 3] = [-2.0, 0, -4], [2.0, 1, -4]
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"width": 8, "height": 6, "frames": 3,
                                "keyframes": [{"c2w": m0.tolist(), "fov": 40, "time": 0.0},
                                              {"c2w": m1.tolist(), "fov": 40, "time": 1.0}]}))
    out = tmp_path / "clip.mp4"
    assert cli.main(["render", str(run_dir), "--path", str(path), "-o", str(out)]) == 0
    _, decoded = _decode(out)
    assert len(decoded) == 3 and decoded[0].shape == (6, 8, 3)
    # x ramps -2 -> 0 -> 2 (red 0.3 -> 0.5 -> 0.7), time 0 -> 0.5 -> 1 (blue)
    for k, d in enumerate(decoded):
        np.testing.assert_allclose(d[3, 4, [0, 2]].astype(float), [(0.3 + 0.2 * k) * 255, 0.5 * k * 255], atol=8)
    out2 = tmp_path / "held"
    assert cli.main(["render", str(run_dir), "--path", str(path), "--time", "0.25", "-o", str(out2)]) == 0
    for f in sorted(out2.glob("*.png")):
        assert abs(int(iio.imread(f)[3, 4, 2]) - round(0.25 * 255)) <= 1


@pytest.mark.parametrize("argv, needle", [
    (["--resolution", "10by3"], "--resolution"),
    (["--frames", "0"], "--frames"),
    (["--time", "1.5"], "--time"),
    (["--background", "2,0,0"], "--background"),
    (["--path", "no_such_path.json"], "no_such_path.json: camera path file not found"),
])
def test_render_verb_errors_are_one_line(stub_run, capsys, argv, needle):
    run_dir, _, _ = stub_run
    assert cli.main(["render", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and err.startswith("fieldforge render: error:")


def test_render_ply_needs_existing_file(tmp_path, capsys):
    assert cli.main(["render", str(tmp_path / "missing.ply"), "--path", "p.json"]) == 2
    assert "missing.ply: file not found" in capsys.readouterr().err


def test_render_ply_with_json_path_matches_the_rasterizer(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    from fieldforge.fields import splat_ply
    from tests.test_splat_scenes import random_gaussians

    model = random_gaussians(30, seed=3)
    ply = tmp_path / "scene.ply"
    splat_ply.write(ply, model)
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -4.0], [0, 0, 0, 1]]
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"width": 24, "height": 20, "keyframes": [{"c2w": c2w, "fx": 30.0}]}))
    out = tmp_path / "frames"
    assert cli.main(["render", str(ply), "--path", str(path), "--frames", "1", "-o", str(out)]) == 0
    frame = iio.imread(sorted(out.glob("*.png"))[0]).astype(np.float64) / 255
    K = torch.tensor([[[30.0, 0, 12], [0, 30.0, 10], [0, 0, 1]]])
    with torch.no_grad():
        ref, _, _ = render_gaussians(splat_ply.read(ply), torch.linalg.inv(torch.tensor([c2w]).float()), K, 24, 20,
                                              backgrounds=torch.ones(1, 3))
    assert np.abs(frame - ref[0].clamp(0, 1).numpy()).max() < 1.5 / 255  # frames are clipped to [0, 1]
    assert frame.std() > 0.01  # the Gaussians are in view, not a blank frame
