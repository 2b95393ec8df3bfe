"""``fieldforge render``: render a camera path of a trained run, or of a 3DGS .ply, to a video.

    fieldforge render RUN|SCENE.ply [--path orbit|spiral|PATH.json] [--frames N] [--fps F]
                          [--resolution WxH] [--time T] [-o OUT.mp4|OUT.gif|OUTDIR] [--force]

What is rendered and how it is written: :mod:`fieldforge.apps.export.video`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from fieldforge.apps.export.video import DEFAULT_FRAMES, build_path, render_frames, renderer
from fieldforge.apps.training.files import refuse_existing
from fieldforge.apps.training.ply_scene import parse_up
from fieldforge.errors import FieldforgeError
from fieldforge.limits import MAX_FRAMES, check_image_size
from fieldforge.scenes import background_rgb, paths


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


def parse_background(text: str | None) -> Tensor | None:
    """A named background or 'r,g,b' in [0, 1] -> [3] tensor (None: the scene's own)."""
    if text is None:
        return None
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
    render, source = renderer(target, args.device, parse_background(args.background), parse_up(args.up))
    cameras = build_path(args.path, source, args.frames, args.time)
    if resolution is not None:
        cameras = paths.with_resolution(cameras, *resolution)
    n = render_frames(render, cameras, out, args.fps, force=args.force)
    print(f"wrote {n} frames to {out}")
    return 0
