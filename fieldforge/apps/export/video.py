"""Rendering a camera path to a video: an mp4 (H.264 through imageio-ffmpeg), a GIF, or a folder
of PNGs (``fieldforge render``).

``orbit`` and ``spiral`` paths are built from the training cameras (:mod:`fieldforge.scenes.paths`);
a JSON camera path is documented there too. A 3DGS .ply (from any trainer) takes its cameras
from the trainer's ``cameras.json`` when found, else from a ring around its Gaussians
(:mod:`fieldforge.apps.training.ply_scene`). :func:`render_frames` writes the frames one at a
time as they are rendered, to a temporary name that takes the output's only when every frame is
written; an existing output is kept unless ``force``. Paths beyond
:data:`fieldforge.limits.MAX_FRAMES` frames or :data:`~fieldforge.limits.MAX_PIXELS` pixels a
frame, or larger than the available memory, are refused before anything is rendered.

Frames are [H, W, 3] RGB, either floats in [0, 1] (clamped, then rounded half up to 8 bits with no
gamma change: values are written as they are, like the dataset PNGs they were trained on) or
uint8. MP4 frames of odd width or height get their last column / row repeated (H.264 needs
even sizes). The output kind follows the suffix of ``out``: ``.mp4``, ``.gif``, anything else is a
directory receiving ``00000.png``, ``00001.png``, ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from fieldforge.apps.training.files import staged
from fieldforge.apps.training.ply_scene import load_renderable
from fieldforge.errors import FieldforgeError
from fieldforge.limits import MAX_FRAMES, check_image_size, check_memory
from fieldforge.scenes import Cameras, Scene, background_rgb, paths
from fieldforge.scenes.images import to_uint8

DEFAULT_FRAMES = 120

RenderFn = Callable[[Cameras], Tensor]  # one camera -> rgb [H, W, 3] in [0, 1]


def output_kind(out: str | Path) -> str:
    """"mp4", "gif" or "png" (a directory) from the suffix of ``out``."""
    suffix = Path(out).suffix.lower()
    return {".mp4": "mp4", ".gif": "gif"}.get(suffix, "png")


class FrameWriter:
    """Append frames one at a time; use as a context manager. ``fps`` is frames per second."""

    def __init__(self, out: str | Path, fps: float):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.out = Path(out)
        self.kind = output_kind(self.out)
        self.count = 0
        self._writer = None
        self._gif_ms = 1000.0 / fps
        self._gif_frames: list[np.ndarray] = []  # GIFs are written in one go on close
        try:
            if self.kind == "png":
                self.out.mkdir(parents=True, exist_ok=True)
            else:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                if self.kind == "mp4":
                    self._writer = imageio_v2.get_writer(self.out, format="FFMPEG", mode="I", fps=fps,
                                                         codec="libx264", quality=8, macro_block_size=1,
                                                         ffmpeg_log_level="error")
        except OSError as e:
            raise FieldforgeError(f"{self.out}: cannot write output: {e}") from None

    def append(self, frame: torch.Tensor | np.ndarray) -> None:
        img = to_uint8(frame)
        if self.kind == "png":
            iio.imwrite(self.out / f"{self.count:05d}.png", img)
        elif self.kind == "mp4":
            # H.264 in yuv420p needs even sizes: an odd last row/column is repeated once
            h, w = img.shape[:2]
            self._writer.append_data(np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
        else:
            self._gif_frames.append(img)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._gif_frames:
            try:
                iio.imwrite(self.out, np.stack(self._gif_frames), duration=self._gif_ms, loop=0)
            except OSError as e:
                raise FieldforgeError(f"{self.out}: cannot write output: {e}") from None
            self._gif_frames = []

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_path(spec: str, source: Scene | None, n_frames: int | None, time: float | None) -> Cameras:
    """Cameras of ``--path``: "orbit"/"spiral" from ``source``'s training cameras, else a JSON file."""
    if spec in ("orbit", "spiral"):
        if source is None:
            raise FieldforgeError(f"--path {spec} needs a run's training cameras; give a camera-path JSON")
        make = paths.orbit if spec == "orbit" else paths.spiral
        try:
            cams = make(source, n_frames or DEFAULT_FRAMES, times=time)
        except ValueError as e:
            raise FieldforgeError(f"--path {spec}: {e}") from None
        return cams
    cams = paths.load_path(spec, n_frames)
    if time is not None:
        cams.times = torch.full((len(cams),), float(time))
    return cams


def check_budget(cameras: Cameras, out: str | Path) -> None:
    """Refuse a path whose frames are too many or too large for this machine before rendering:
    each frame is rendered and streamed to the writer on its own, except a GIF's, which are all
    held until it is written."""
    if len(cameras) > MAX_FRAMES:
        raise FieldforgeError(f"{len(cameras)} frames is more than the limit of {MAX_FRAMES}")
    w, h = int(cameras.width.max()), int(cameras.height.max())
    check_image_size(w, h, "a frame")
    if output_kind(out) == "gif":
        check_memory(len(cameras) * w * h * 3, f"a GIF of {len(cameras)} frames of {w}x{h}")


def render_frames(render: RenderFn, cameras: Cameras, out: str | Path, fps: float, progress: bool = True,
                  force: bool = False) -> int:
    """Render every camera with ``render`` and write the frames to ``out`` (never over an existing
    output unless ``force``; nothing is left on failure: :func:`fieldforge.apps.training.files.staged`);
    returns the count."""
    check_budget(cameras, out)
    with staged(out, force) as tmp, FrameWriter(tmp, fps) as writer:
        for i in tqdm(range(len(cameras)), desc="render", unit="frame", disable=not progress):
            with torch.no_grad():
                rgb = render(cameras[i])
            h, w = int(cameras.height[i]), int(cameras.width[i])
            if tuple(rgb.shape) != (h, w, 3):
                raise ValueError(f"render returned {tuple(rgb.shape)} for a {w}x{h} camera; expected [H, W, 3]")
            writer.append(rgb)
    return writer.count


def renderer(target: Path, device: str = "auto", background: Tensor | None = None, up: Tensor | None = None
             ) -> tuple[RenderFn, Scene]:
    """The RGB renderer of a run folder or a 3DGS ``.ply`` and the scene of its cameras.
    ``background`` defaults to the run's scene background (white for a .ply); ``up`` is the up
    axis of a camera-less .ply's ring (:func:`fieldforge.apps.training.ply_scene.ply_scene`)."""
    method, scene = load_renderable(target, device, up)
    default = "white" if target.suffix.lower() == ".ply" else scene.background
    bg = (background_rgb(default) if background is None else background).to(method.device)

    def render(cam: Cameras) -> Tensor:
        return method.render(cam.to(method.device), bg)["rgb"].float().cpu()

    return render, scene
