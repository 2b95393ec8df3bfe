"""The :class:`Viewer`: a viser server that renders a method for every connected browser.

Each browser's view is rendered on the server with ``method.render`` (cameras converted by
:mod:`fieldforge.apps.viewer.render`) at ``moving_size`` pixels on the long side while its camera
moves and at ``max_size`` once the camera has rested ``REST_SECONDS``, and shown as viser's
background image; a new browser tab first gets a ``moving_size`` picture, then the refined one.
Each view renders its newest camera only (older moves are skipped), and the view of a closed tab
is dropped. ``fieldforge view`` renders in :meth:`Viewer.serve_forever`'s thread; a live
training run renders in the training thread through :meth:`Viewer.on_step`, between steps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import viser

from fieldforge.apps.training.methods.base import Method
from fieldforge.apps.viewer.path import Keyframes
from fieldforge.apps.viewer.render import display, image_channels, render_size, viser_cameras, viser_pose
from fieldforge.scenes import Cameras, Scene, background_rgb
from fieldforge.scenes.paths import estimate_up, focus_point

REST_SECONDS = 0.3
THUMBNAIL_HEIGHT = 48
PROBE_HEIGHT = 16


@dataclass
class _View:
    """Render bookkeeping of one browser: ``version`` counts camera moves and setting changes."""

    client: viser.ClientHandle
    version: int = 0
    moved: float = 0.0  # time.perf_counter() of the last camera move
    done: int = -1  # version of the last image sent
    done_full: bool = False


class Viewer:
    """A viser server showing ``method`` on ``scene`` to every connected browser."""

    def __init__(self, method: Method, scene: Scene, host: str = "127.0.0.1", port: int = 8080, *,
                 path_file: str | Path = "camera_path.json", max_size: int = 512, moving_size: int = 128,
                 live: bool = False, refresh_steps: int = 100, refresh_seconds: float = 10.0):
        self.method, self.scene = method, scene
        self.cameras = scene.split("train").cameras if "train" in scene.splits else scene.cameras
        self.max_size, self.moving_size = max_size, moving_size
        self.refresh_steps, self.refresh_seconds = refresh_steps, refresh_seconds
        self.keyframes = Keyframes(int(self.cameras.width[0]), int(self.cameras.height[0]))
        self.paused = False
        self.step = 0
        self._refreshed = (0, time.perf_counter())
        self._status_at = 0.0
        self._views: dict[int, _View] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.server = viser.ViserServer(host=host, port=port, label="fieldforge", verbose=False)
        probe = viser_cameras(*viser_pose(self.cameras), 1.0, PROBE_HEIGHT, self._time_default())
        self.channels = image_channels(self._render(probe, background_rgb(scene.background)))
        self._build_gui(Path(path_file), live)
        self._add_training_cameras()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    # ---- GUI and scene -------------------------------------------------------------------
    def _time_default(self) -> float | None:
        return None if self.cameras.times is None else float(self.cameras.times[0])

    def _build_gui(self, path_file: Path, live: bool) -> None:
        gui = self.server.gui
        with gui.add_folder("View"):
            self.gui_output = gui.add_dropdown("Output", tuple(self.channels), initial_value="rgb")
            self.gui_time = None if self.cameras.times is None else gui.add_slider(
                "Time", 0.0, 1.0, 0.01, self._time_default())
            bg = background_rgb(self.scene.background)
            self.gui_background = gui.add_rgb("Background", tuple(int(round(v * 255)) for v in bg.tolist()))
            self.gui_frustums = gui.add_checkbox("Training cameras", True, hint="click one to view from it")
        self.gui_frustums.on_update(lambda _: self.show_training_cameras(self.gui_frustums.value))
        for handle in (self.gui_output, self.gui_time, self.gui_background):
            if handle is not None:
                handle.on_update(lambda _: self.invalidate())
        self.gui_status = self.gui_pause = None
        if live:
            with gui.add_folder("Training"):
                self.gui_status = gui.add_markdown("step 0")
                self.gui_pause = gui.add_button("Pause training")
            self.gui_pause.on_click(lambda _: self.set_paused(not self.paused))
        with gui.add_folder("Camera path"):
            add = gui.add_button("Add keyframe", hint="the current view (and time) as the next keyframe")
            clear = gui.add_button("Clear keyframes")
            self.gui_frames = gui.add_number("Frames", 120, min=1, step=1)
            self.gui_path_file = gui.add_text("Path file", str(path_file))
            save = gui.add_button("Save path")
            self.gui_path_status = gui.add_markdown("0 keyframes")
        add.on_click(lambda e: self.add_keyframe(e.client))
        clear.on_click(lambda _: self.clear_keyframes())
        save.on_click(lambda _: self.save_keyframes())

    def _add_training_cameras(self) -> None:
        """Frustums (with thumbnails) of the training cameras; the initial view looks at their focus
        point from behind camera 0, with the world up estimated from the cameras."""
        cams = self.cameras
        center = focus_point(cams).numpy()
        up = estimate_up(cams).numpy()
        self.scale = 0.05 * float(np.linalg.norm(cams.centers.double().numpy() - center, axis=-1).mean())
        self.server.scene.set_up_direction(up)
        position, _, fov = viser_pose(cams)
        self.server.initial_camera.position = center + 1.5 * (position - center)  # behind camera 0's frustum
        self.server.initial_camera.look_at = center
        self.server.initial_camera.up, self.server.initial_camera.fov = up, fov
        train = self.scene.split("train") if "train" in self.scene.splits else self.scene
        self.frustums = []
        for i in range(len(cams)):
            pos, wxyz, fov = viser_pose(cams, i)
            h, w = int(cams.height[i]), int(cams.width[i])
            thumb = F.interpolate(train.rgb(i).permute(2, 0, 1)[None], size=(THUMBNAIL_HEIGHT, max(1, round(
                THUMBNAIL_HEIGHT * w / h))), mode="area")[0].permute(1, 2, 0)
            frustum = self.server.scene.add_camera_frustum(
                f"/train/{i}", fov=fov, aspect=w / h, scale=self.scale, thickness=0.05 * self.scale,
                image=(thumb.clamp(0, 1).numpy() * 255).astype(np.uint8), wxyz=wxyz, position=pos)
            frustum.on_click(lambda e, i=i: self.jump(e.client, i))
            self.frustums.append(frustum)

    def show_training_cameras(self, visible: bool) -> None:
        for frustum in self.frustums:
            frustum.visible = visible

    def jump(self, client: viser.ClientHandle, i: int) -> None:
        """Move ``client``'s camera to training camera ``i`` (pose and vertical field of view)."""
        pos, wxyz, fov = viser_pose(self.cameras, i)
        with client.atomic():
            client.camera.wxyz = wxyz
            client.camera.position = pos
            client.camera.fov = fov

    # ---- camera path ---------------------------------------------------------------------
    def add_keyframe(self, client: viser.ClientHandle) -> None:
        """Append ``client``'s view at the current time; keyframes have the training image size and
        the view's vertical field of view (``render --resolution`` changes the size)."""
        cam = client.camera
        kf = self.keyframes.add(viser_cameras(cam.position, cam.wxyz, cam.fov, cam.aspect, self.keyframes.height,
                                              self._time()))
        pos, wxyz, fov = viser_pose(kf)
        self.server.scene.add_camera_frustum(f"/keyframes/{len(self.keyframes) - 1}", fov=fov,
                                             aspect=self.keyframes.width / self.keyframes.height,
                                             scale=self.scale, color=(255, 120, 0), wxyz=wxyz, position=pos)
        self.gui_path_status.content = f"{len(self.keyframes)} keyframes"

    def clear_keyframes(self) -> None:
        self.keyframes.clear()
        self.server.scene.remove_by_name("/keyframes")
        self.gui_path_status.content = "0 keyframes"

    def save_keyframes(self) -> Path | None:
        """Save the keyframes to the GUI's path file; the result (or the error) is shown in the GUI."""
        try:
            out = self.keyframes.save(self.gui_path_file.value, int(self.gui_frames.value))
        except (ValueError, OSError) as e:
            self.gui_path_status.content = f"not saved: {e}"
            return None
        self.gui_path_status.content = f"saved {len(self.keyframes)} keyframes to `{out}`"
        return out

    # ---- rendering -----------------------------------------------------------------------
    def _time(self) -> float | None:
        return None if self.gui_time is None else float(self.gui_time.value)

    def _render(self, cameras: Cameras, background: torch.Tensor) -> dict[str, torch.Tensor]:
        """``method.render`` in eval mode, leaving the training mode and the torch RNG as they were
        (a live run stays exactly reproducible)."""
        rng, was_training = torch.get_rng_state(), self.method.training
        self.method.eval()
        try:
            with torch.no_grad():
                return self.method.render(cameras.to(self.method.device), background.to(self.method.device))
        finally:
            self.method.train(was_training)
            torch.set_rng_state(rng)

    def render_view(self, client: viser.ClientHandle, long_side: int) -> np.ndarray:
        """The selected output of ``client``'s current view as [H, W, 3] uint8."""
        cam = client.camera
        h = render_size(cam.aspect, long_side, cam.image_height)
        bg = torch.tensor(self.gui_background.value, dtype=torch.float32) / 255
        out = self._render(viser_cameras(cam.position, cam.wxyz, cam.fov, cam.aspect, h, self._time()), bg)
        return display(out, self.gui_output.value)

    def invalidate(self) -> None:
        """Re-render every view (a setting or the model changed)."""
        with self._lock:
            for v in self._views.values():
                v.version += 1
        self._wake.set()

    def serve(self) -> bool:
        """Render every view that is out of date; returns whether anything was rendered."""
        now = time.perf_counter()
        with self._lock:
            views = list(self._views.values())
        rendered = False
        for v in views:
            resting = now - v.moved >= REST_SECONDS
            if v.done == v.version and (v.done_full or not resting):
                continue
            version = v.version
            img = self.render_view(v.client, self.max_size if resting else self.moving_size)
            with self._lock:
                if v.client.client_id not in self._views:  # the browser left during the render
                    continue
            v.client.scene.set_background_image(img, format="jpeg", jpeg_quality=90)
            v.done, v.done_full, rendered = version, resting, True
        return rendered

    def _idle(self) -> None:
        self._wake.clear()
        if not self.serve():
            self._wake.wait(REST_SECONDS / 3)

    def _connect(self, client: viser.ClientHandle) -> None:
        view = _View(client, moved=time.perf_counter())  # a new tab gets a fast low-resolution picture first

        @client.camera.on_update
        def _(_: viser.CameraHandle) -> None:
            view.version, view.moved = view.version + 1, time.perf_counter()
            self._wake.set()

        with self._lock:
            self._views[client.client_id] = view
        self._wake.set()

    def _disconnect(self, client: viser.ClientHandle) -> None:
        with self._lock:
            self._views.pop(client.client_id, None)

    def serve_forever(self) -> None:
        """Render views as cameras move until :meth:`stop` (the loop of ``fieldforge view``)."""
        while not self._stop.is_set():
            self._idle()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.server.stop()

    # ---- live training -------------------------------------------------------------------
    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if self.gui_pause is not None:
            self.gui_pause.label = "Resume training" if paused else "Pause training"
            self.gui_status.content = f"{'paused at ' if paused else ''}step {self.step}"
        self._wake.set()

    def on_step(self, step: int, method: Method) -> None:
        """Trainer hook after each step: refresh every ``refresh_steps`` steps or ``refresh_seconds``,
        render views whose camera moved, and block while paused (until resumed or stopped)."""
        self.step, now = step, time.perf_counter()
        if self.gui_status is not None and now - self._status_at >= 0.5:
            self.gui_status.content, self._status_at = f"step {step}", now
        last_step, last_time = self._refreshed
        if step - last_step >= self.refresh_steps or now - last_time >= self.refresh_seconds:
            self._refreshed = (step, now)
            self.invalidate()
        self.serve()
        while self.paused and not self._stop.is_set():
            self._idle()
