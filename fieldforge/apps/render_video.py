"""``fieldforge render``: render a camera path of a trained run, or of a 3DGS .ply, to a video.

    fieldforge render RUN [--path orbit|spiral|PATH.json] [--frames N] [--fps F]
                          [--resolution WxH] [--time T] [-o OUT.mp4|OUT.gif|OUTDIR] [--force]

``orbit`` and ``spiral`` are built from the run's training cameras (:mod:`fieldforge.scenes.paths`);
a JSON camera path is documented there too. A .ply target (from any 3DGS trainer) takes its cameras
from the trainer's ``cameras.json`` when found, else from a ring around its Gaussians
(:mod:`fieldforge.apps.ply_scene`).
Frames are written by :class:`fieldforge.apps.video.FrameWriter` (mp4, gif or a PNG folder), one at a
time as they are rendered, to a temporary name that takes the output's only when every frame is
written; an existing output is kept unless ``--force``. Paths beyond
:data:`fieldforge.limits.MAX_FRAMES` frames or :data:`~fieldforge.limits.MAX_PIXELS` pixels a frame,
or larger than the available memory, are refused before anything is rendered.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from fieldforge.apps.files import refuse_existing, staged
from fieldforge.apps.video import FrameWriter, output_kind
from fieldforge.errors import FieldforgeError
from fieldforge.limits import MAX_FRAMES, check_image_size, check_memory
from fieldforge.scenes import Cameras, Scene, background_rgb
from fieldforge.scenes import paths

DEFAULT_FRAMES = 120

RenderFn = Callable[[Cameras], Tensor]  # one camera -> rgb [H, W, 3] in [0, 1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="run directory (from fieldforge train) or a 3D Gaussian splat .ply")
    p.add_argument("--path", default="orbit",
                   help="orbit, spiral (from the training cameras) or a camera-path JSON file")
    p.add_argument("--frames", type=int, default=None,
                   help=f"number of frames (default {DEFAULT_FRAMES}; a JSON path may set its own)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second of the video")
    p.add_argument("--resolution", default=None, help="WxH output size (default: the path's camera size)")
    p.add_argument("--time", type=float, default=None, help="render every frame at this time in [0, 1]")
    p.add_argument("-o", "--output", default=None,
                   help="OUT.mp4, OUT.gif or a directory for PNGs (default: RUN/renders/<path>.mp4)")
    p.add_argument("--background", default=None, help="white, black or R,G,B in [0, 1] (default: the scene's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--up", default=None, metavar="X,Y,Z",
                   help="a .ply without cameras.json: the world's up axis of its orbit (default: guessed)")


def parse_resolution(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FieldforgeError(f"--resolution {text!r}: expected WxH, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise FieldforgeError(f"--resolution {text!r}: width and height must be positive")
    return w, h


def parse_background(text: str | None, default: str) -> Tensor:
    """A named background or 'r,g,b' in [0, 1] -> [3] tensor."""
    if text is None:
        return background_rgb(default)
    if "," in text:
        try:
            rgb = [float(v) for v in text.split(",")]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= v <= 1 for v in rgb):
            raise FieldforgeError(f"--background {text!r}: expected three numbers in [0, 1]")
        return torch.tensor(rgb)
    try:
        return background_rgb(text)
    except ValueError as e:
        raise FieldforgeError(f"--background: {e}") from None


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
    output unless ``force``; nothing is left on failure: :func:`fieldforge.apps.files.staged`);
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


def _run_renderer(run_dir: Path, device: str, background: str | None) -> tuple[RenderFn, Scene]:
    from fieldforge.apps.run import load_run

    method, _, scene = load_run(run_dir, device)
    bg = parse_background(background, scene.background).to(method.device)

    def render(cam: Cameras) -> Tensor:
        return method.render(cam.to(method.device), bg)["rgb"].float().cpu()

    return render, scene


def _ply_renderer(ply: Path, device: str, background: str | None, up: str | None) -> tuple[RenderFn, Scene]:
    """Renderer of a 3DGS .ply and the scene of its cameras (:func:`fieldforge.apps.ply_scene.ply_scene`)."""
    from fieldforge.apps.ply_scene import parse_up, ply_scene
    from fieldforge.apps.run import resolve_device

    method, scene, note = ply_scene(ply, resolve_device(device), parse_up(up))
    print(note)
    bg = parse_background(background, "white").to(method.device)

    def render(cam: Cameras) -> Tensor:
        return method.render(cam.to(method.device), bg)["rgb"].float().cpu()

    return render, scene


def run(args: argparse.Namespace) -> int:
    if args.frames is not None and not 1 <= args.frames <= MAX_FRAMES:
        raise FieldforgeError(f"--frames must be in [1, {MAX_FRAMES}], got {args.frames}")
    if not args.fps > 0:
        raise FieldforgeError(f"--fps must be positive, got {args.fps}")
    if args.time is not None and not 0 <= args.time <= 1:
        raise FieldforgeError(f"--time must lie in [0, 1], got {args.time}")
    resolution = parse_resolution(args.resolution) if args.resolution else None
    if resolution is not None:
        check_image_size(*resolution, "--resolution: a frame")
    target = Path(args.target)
    if args.output:
        out = Path(args.output)
    else:
        base = target.parent if target.suffix.lower() == ".ply" else target / "renders"
        out = base / f"{Path(args.path).stem}.mp4"
    refuse_existing(out, args.force)
    if target.suffix.lower() == ".ply":
        if not target.is_file():
            raise FieldforgeError(f"{target}: file not found")
        render, source = _ply_renderer(target, args.device, args.background, args.up)
    else:
        render, source = _run_renderer(target, args.device, args.background)
    cameras = build_path(args.path, source, args.frames, args.time)
    if resolution is not None:
        cameras = paths.with_resolution(cameras, *resolution)
    n = render_frames(render, cameras, out, args.fps, force=args.force)
    print(f"wrote {n} frames to {out}")
    return 0
