"""``fieldforge process``: photographs or a video to posed data with pycolmap.

    fieldforge process IMAGES_DIR|VIDEO -o DATA [--matcher exhaustive|sequential]
                       [--fps F | --num-frames N] [--downscales 2 4 8] [--camera-model M]
                       [--max-image-size PX] [--num-threads T] [--force]

What it writes: :mod:`fieldforge.apps.process.pipeline`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fieldforge.apps.process.pipeline import DEFAULT_FRAMES, ProcessOptions, process, summary
from fieldforge.apps.process.sfm import CAMERA_MODELS, MATCHERS, SfmOptions


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="folder of photographs, or a video file")
    p.add_argument("-o", "--output", required=True, help="output dataset folder (must not exist or be empty)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--matcher", choices=MATCHERS, default="exhaustive",
                   help="match every pair, or only neighbours in name order (faster for videos)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fps", type=float, default=None, help="video: keep this many frames per second")
    g.add_argument("--num-frames", type=int, default=None,
                   help=f"video: keep this many frames spread over the video (default {DEFAULT_FRAMES})")
    p.add_argument("--downscales", type=int, nargs="*", default=[2, 4, 8],
                   help="factors of the downscaled image copies images_K (default 2 4 8; none: no copies)")
    p.add_argument("--camera-model", choices=CAMERA_MODELS, default="SIMPLE_RADIAL",
                   help="COLMAP camera model shared by all images")
    p.add_argument("--max-image-size", type=int, default=1024, help="longer side (pixels) SIFT runs at")
    p.add_argument("--num-threads", type=int, default=2, help="CPU threads for pycolmap")
    p.add_argument("--verbose", action="store_true", help="show COLMAP's log")
    p.error = lambda message: p.exit(2, f"{p.prog}: error: {message}\n")  # one line, no usage block


def run(args: argparse.Namespace) -> int:
    sfm = SfmOptions(args.matcher, args.camera_model, args.max_image_size, args.num_threads, args.verbose)
    opts = ProcessOptions(sfm, args.fps, args.num_frames, tuple(args.downscales), args.force)
    out = Path(args.output)
    print(summary(process(Path(args.input), out, opts)))
    print(f"wrote {out} (transforms.json, colmap/sparse/0, sparse_pc.ply, images"
          + "".join(f", images_{k}" for k in args.downscales) + ", process_report.json)")
    return 0
