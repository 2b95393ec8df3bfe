"""``fieldforge view``: viser camera conversion, output images, keyframe paths, the live-training
pause hook, one-line errors, and the real viewer in headless Chromium (skipped only when
chromium, chromedriver or selenium are missing)."""

from __future__ import annotations

import io
import json
import math
import shutil
import statistics
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import pytest
import torch
from skimage.transform import resize

from fieldforge.apps.cli.main import main
from fieldforge.apps.training.config import TrainConfig
from fieldforge.apps.training.run import RunDir, load_run
from fieldforge.apps.training.trainer import train
from fieldforge.apps.viewer.server import Viewer
from fieldforge.apps.viewer.path import Keyframes
from fieldforge.apps.viewer.render import display, image_channels, viser_cameras, viser_pose
from fieldforge.scenes.paths import load_path
from tests.helpers import tiny_scene
from tests.test_trainer import _method

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def quat_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    """Textbook rotation matrix of a unit quaternion (scalar first)."""
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def project(cams, point: np.ndarray) -> np.ndarray:
    c2w = cams.c2w[0].double().numpy()
    p = c2w[:3, :3].T @ (point - c2w[:3, 3])
    uvw = cams.K[0].double().numpy() @ p
    return uvw[:2] / uvw[2]


def test_viser_camera_is_opencv_with_vertical_fov():
    q = np.array([0.3, -0.5, 0.6, 0.2])
    q /= np.linalg.norm(q)
    R = quat_matrix(*q)
    eye = np.array([0.5, -1.0, 2.0])
    fov = math.radians(50)
    cams = viser_cameras(eye, q, fov, 2.0, 40, time=0.25)
    assert (int(cams.width[0]), int(cams.height[0])) == (80, 40)
    assert np.allclose(cams.c2w[0, :3, :3].numpy(), R, atol=1e-6)
    assert float(cams.times[0]) == 0.25
    # +Z looks forward to the image centre; -Y (camera up) at the vertical half-fov reaches the top edge.
    assert np.allclose(project(cams, eye + 3 * R[:, 2]), [40, 20], atol=1e-4)
    top = eye + 3 * R[:, 2] - 3 * math.tan(fov / 2) * R[:, 1]
    assert np.allclose(project(cams, top), [40, 0], atol=1e-4)
    right = eye + 3 * R[:, 2] + 3 * math.tan(fov / 2) * 2.0 * R[:, 0]  # aspect 2: horizontal half-extent
    assert np.allclose(project(cams, right), [80, 20], atol=1e-4)
    pos, wxyz, fov_back = viser_pose(cams)
    assert np.allclose(pos, eye, atol=1e-6) and math.isclose(fov_back, fov, rel_tol=1e-6)
    assert np.allclose(quat_matrix(*wxyz), R, atol=1e-6)


def test_display_colour_maps_depth_over_the_foreground_and_keeps_rgb():
    h, w = 4, 5
    depth = torch.linspace(2, 4, h * w).reshape(h, w, 1)
    opacity = torch.ones(h, w, 1)
    depth[0, 0], opacity[0, 0] = 1e10, 0.0  # background: must not stretch the range
    opacity[0, 1] = 0.75
    rgb = torch.rand(h, w, 3)
    out = {"rgb": rgb, "depth": depth, "opacity": opacity, "normal": rgb * 2 - 1, "loss": torch.tensor(1.0)}
    assert image_channels(out) == ["rgb", "depth", "normal", "opacity"]
    turbo, viridis = matplotlib.colormaps["turbo"], matplotlib.colormaps["viridis"]
    d = display(out, "depth")
    assert np.array_equal(d[-1, -1], turbo(1.0, bytes=True)[:3])  # farthest foreground: top of the map
    assert np.array_equal(d[0, 0], turbo(1.0, bytes=True)[:3])  # background clamps to the far end
    assert np.array_equal(display(out, "opacity")[0, 1], viridis(0.75, bytes=True)[:3])
    expected = np.floor(rgb.numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(display(out, "rgb"), expected)
    assert np.abs(display(out, "normal").astype(int) - expected).max() <= 1  # (x + 1) / 2 undoes 2x - 1


def test_keyframes_save_the_json_render_reads(tmp_path):
    kfs = Keyframes(40, 30)
    quats = [np.array(q) / np.linalg.norm(q) for q in ([0.9, 0.1, 0.3, 0.0], [1.0, 0, 0, 0], [0.2, 0.7, -0.1, 0.4])]
    eyes = [np.array([0.0, -3.0, 1.0]), np.array([1.0, 2.0, 0.0]), np.array([-2.0, 0.5, 0.3])]
    fovs = [40.0, 55.0, 70.0]
    path = tmp_path / "paths" / "path.json"
    for q, eye, fov, t in zip(quats, eyes, fovs, [0.0, 0.3, 1.0]):
        kfs.add(viser_cameras(eye, q, math.radians(fov), 16 / 9, 90, time=t))
    kfs.save(path)
    cams = load_path(path)
    assert len(cams) == 3 and (int(cams.width[0]), int(cams.height[0])) == (40, 30)
    for i, (q, eye, fov) in enumerate(zip(quats, eyes, fovs)):
        assert np.allclose(cams.c2w[i, :3, :3].numpy(), quat_matrix(*q), atol=1e-5)
        assert np.allclose(cams.c2w[i, :3, 3].numpy(), eye, atol=1e-5)
        fy = 15 / math.tan(math.radians(fov) / 2)  # the vertical fov is kept at the path size
        assert np.allclose(cams.K[i].numpy(), [[fy, 0, 20], [0, fy, 15], [0, 0, 1]], atol=1e-3)
    assert torch.allclose(cams.times, torch.tensor([0.0, 0.3, 1.0]))
    kfs.save(path, frames=7)
    assert len(load_path(path)) == 7
    kfs.clear()
    with pytest.raises(ValueError):
        kfs.save(path)  # nothing to save: the previous file is kept whole
    assert len(load_path(path)) == 7 and sorted(p.name for p in path.parent.iterdir()) == ["path.json"]


def test_pause_blocks_the_training_loop_and_renders_keep_the_rng(tmp_path):
    method = _method(steps=8)
    viewer = Viewer(method, tiny_scene(), port=0, live=True, refresh_steps=1)
    try:
        method.train()
        rng = torch.get_rng_state()
        viewer._render(viser_cameras(*viser_pose(viewer.cameras), 1.0, 8), torch.ones(3))
        assert torch.equal(rng, torch.get_rng_state()) and method.training
        viewer.set_paused(True)
        assert viewer.gui_pause.label == "Resume training"
        result = {}
        loop = threading.Thread(target=lambda: result.update(train(
            method, RunDir(tmp_path), TrainConfig(method="nerf", steps=8), 8, quiet=True, on_step=viewer.on_step)))
        loop.start()
        time.sleep(0.5)
        assert loop.is_alive() and viewer.step == 1  # blocked in the hook after the first step
        viewer.set_paused(False)
        loop.join(timeout=30)
        assert not loop.is_alive() and result["step"] == 8 and viewer.step == 8
    finally:
        viewer.stop()


def test_time_slider_only_for_dynamic_scenes():
    scene = tiny_scene()
    viewer = Viewer(_method(), scene, port=0)
    try:
        assert viewer.gui_time is None and viewer._time() is None
    finally:
        viewer.stop()
    scene.cameras.times = torch.linspace(0.2, 0.8, len(scene))
    viewer = Viewer(_method(), scene, port=0)
    try:
        assert viewer.gui_time is not None and viewer._time() == pytest.approx(0.2)
        viewer.gui_time.value = 0.65
        assert viewer._time() == pytest.approx(0.65)
    finally:
        viewer.stop()


def test_train_view_runs_the_hook_after_every_step(tmp_path, monkeypatch, capsys):
    steps, original = [], Viewer.on_step
    monkeypatch.setattr(Viewer, "on_step", lambda self, step, method: (steps.append(step), original(self, step, method)))
    assert main(["train", "--method", "splat", "-o", str(tmp_path / "run"), "--steps", "3", "--downscale", "4",
                 "--quiet", "--set", "init_num_points=200", "--view", "--port", "0"]) == 0
    assert steps == [1, 2, 3]
    assert any(line.startswith("viewer: http://127.0.0.1:") for line in capsys.readouterr().out.splitlines())


@pytest.fixture(scope="module")
def viewer_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("viewer") / "splat"
    assert main(["train", "--method", "splat", "-o", str(run), "--steps", "2", "--downscale", "2", "--quiet",
                 "--set", "init_num_points=400"]) == 0
    return run


def test_view_errors_are_one_line(viewer_run, tmp_path, capsys):
    assert main(["view", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fieldforge view: error: {tmp_path / 'missing'}: run directory not found"
    assert main(["view", str(viewer_run), "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "fieldforge view: error: --port must be in [0, 65535], got 70000"
    shutil.copy(RunDir(viewer_run).config, tmp_path / "config.json")
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fieldforge view: error: {RunDir(tmp_path).checkpoint}: checkpoint not found"


def _chrome(user_dir: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("chromium / chromedriver not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={user_dir}", "--window-size=800,600", "--force-device-scale-factor=1"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def _wait(cond, timeout: float = 15.0) -> None:
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _scene_region(shot: np.ndarray) -> np.ndarray:
    """Part of the canvas that the GUI panel, the notification and the axes logo leave uncovered."""
    h, w = shot.shape[:2]
    return shot[int(0.45 * h):h - 60, 60:int(0.3 * w), :3].astype(float)


def test_browser_shows_the_render_and_follows_the_camera(viewer_run, tmp_path):
    driver = _chrome(tmp_path / "chrome")
    method, _, scene = load_run(viewer_run, "cpu")
    viewer = Viewer(method, scene, port=0, path_file=tmp_path / "path.json")
    server = threading.Thread(target=viewer.serve_forever, daemon=True)
    server.start()
    try:
        driver.get(viewer.url)
        _wait(lambda: any(v.done_full for v in viewer._views.values()), 25)
        view = next(iter(viewer._views.values()))
        viewer.gui_frustums.value = False  # frustums drawn by the browser would cover the render

        def shot() -> np.ndarray:
            return iio.imread(io.BytesIO(driver.get_screenshot_as_png()))

        def shown() -> float:
            """Mean difference between the scene part of a screenshot and the current view's render
            (independently redone here) stretched over the canvas, as viser draws a background image."""
            s, expected = shot(), viewer.render_view(view.client, viewer.max_size)
            up = resize(expected, s.shape[:2], order=1, preserve_range=True)
            return float(np.abs(_scene_region(s) - _scene_region(up)).mean())

        _wait(lambda: shown() < 6)  # the browser first reports viser's default camera, then the initial one
        before = _scene_region(shot())
        assert before.std() > 10 and np.abs(before - 255).mean() > 10  # not blank, not the white background
        viewer.gui_output.value = "depth"  # the GUI switch re-renders the view colour-mapped
        _wait(lambda: shown() < 6)
        assert np.abs(_scene_region(shot()) - before).mean() > 20
        viewer.gui_output.value = "rgb"

        viewer.jump(view.client, 7)  # the browser moves its camera and reports it back
        train_cam = viewer.cameras[7]
        _wait(lambda: np.allclose(view.client.camera.position, train_cam.c2w[0, :3, 3].numpy(), atol=1e-3))
        cam = view.client.camera
        seen = viser_cameras(cam.position, cam.wxyz, cam.fov, cam.aspect, int(train_cam.height[0]))
        assert torch.allclose(seen.c2w, train_cam.c2w, atol=1e-3)
        assert torch.allclose(seen.K[0, 1, 1], train_cam.K[0, 1, 1], rtol=1e-3)
        bg = torch.ones(3)
        wide, narrow = method.render(seen, bg)["rgb"], method.render(train_cam, bg)["rgb"]
        x0 = (wide.shape[1] - narrow.shape[1]) // 2  # same vertical fov, centred principal points
        assert (wide[:, x0:x0 + narrow.shape[1]] - narrow).abs().mean() < 0.01
        _wait(lambda: shown() < 6)
        after = _scene_region(shot())
        assert np.abs(after - before).mean() > 20  # the picture changed with the camera

        viewer.add_keyframe(view.client)
        assert viewer.save_keyframes() == tmp_path / "path.json"
        saved = load_path(tmp_path / "path.json", n_frames=1)
        assert torch.allclose(saved.c2w, train_cam.c2w, atol=1e-3)
    finally:
        driver.quit()
        viewer.stop()


def test_bench_viewer_times_the_render_path_and_keeps_existing_output(viewer_run, tmp_path, capsys):
    out = tmp_path / "viewer.json"
    assert main(["bench", "viewer", str(viewer_run), "--out", str(out), "--size", "32", "--views", "3"]) == 0
    (row,) = json.loads(out.read_text())
    assert row["method"] == "splat" and len(row["seconds"]) == 3 == len(set(row["views"]))
    assert row["fps"] == pytest.approx(1.0 / statistics.median(row["seconds"]))
    assert main(["bench", "viewer", str(viewer_run), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"fieldforge bench: error: {out}: already exists (pass --force to overwrite)"


class _StubClient:
    """What the viewer uses of a viser client: id, camera (with on_update) and background image."""

    def __init__(self, cams):
        pos, wxyz, fov = viser_pose(cams)
        self.client_id, self.images = 7, []
        self.camera = type("Cam", (), {"position": pos, "wxyz": wxyz, "fov": fov, "aspect": 1.0, "image_height": 600,
                                       "on_update": lambda self, fn: fn})()
        self.scene = type("Scene", (), {"set_background_image": lambda _, img, **kw: self.images.append(img.shape)})()


def test_a_new_tab_gets_a_low_resolution_picture_first_and_closed_tabs_are_dropped():
    viewer = Viewer(_method(steps=2), tiny_scene(), port=0, max_size=48, moving_size=12)
    try:
        client = _StubClient(viewer.cameras)
        viewer._connect(client)
        assert viewer.serve() and client.images == [(12, 12, 3)]
        viewer._views[client.client_id].moved -= 1.0  # the camera has rested since
        assert viewer.serve() and client.images[-1] == (48, 48, 3)
        assert not viewer.serve()  # nothing new to render
        viewer.invalidate()
        viewer._disconnect(client)
        assert not viewer.serve() and len(client.images) == 2
    finally:
        viewer.stop()
