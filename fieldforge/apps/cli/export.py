"""``fieldforge export``: write a trained run in a standard interchange format.

    fieldforge export RUN --format mesh|pointcloud|splat-ply|points|cameras -o OUT [--force]

The formats and their options: :mod:`fieldforge.apps.export.formats`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fieldforge.apps.export.formats import FORMATS, ExportOptions, export


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (from fieldforge train)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="what to write")
    p.add_argument("-o", "--output", required=True, help="output file (suffix: see the format)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    g = p.add_argument_group("mesh")
    g.add_argument("--resolution", type=_positive(int), default=256, help="grid cells on the longest axis")
    g.add_argument("--threshold", type=float, default=None,
                   help="density level (1/world units; default ln 2 / voxel size)")
    g.add_argument("--clean", action="store_true", help="drop small components and degenerate triangles (open3d)")
    g.add_argument("--time", type=float, default=None, help="time in [0, 1] for dynamic fields")
    g = p.add_argument_group("pointcloud and field splat-ply")
    g.add_argument("--num-views", type=_positive(int), default=None, help="training cameras to render (default all)")
    g.add_argument("--downscale", type=_positive(float), default=1.0, help="render at 1/downscale resolution")
    g.add_argument("--max-points", type=_positive(int), default=None, help="random subsample to at most this many")
    p.error = lambda message: p.exit(2, f"{p.prog}: error: {message}\n")  # one line, no usage block


def run(args: argparse.Namespace) -> int:
    opts = ExportOptions(args.run, args.resolution, args.threshold, args.clean, args.time, args.num_views,
                         args.downscale, args.max_points)
    what = export(args.format, Path(args.output), opts, args.force)
    print(f"wrote {args.output} ({what})")
    return 0
