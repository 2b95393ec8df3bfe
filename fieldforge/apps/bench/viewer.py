"""``fieldforge bench viewer``: frames per second of the viewer's render path on trained runs.

The path is the one a browser's camera takes in ``fieldforge view``
(:mod:`fieldforge.apps.viewer.render`): a viser pose (position, wxyz, vertical field of view) is
turned into a camera whose long side is ``--size`` pixels, ``method.render`` draws it and
``display`` converts it to the uint8 image that is sent. The poses are those of ``--views``
evenly spaced test cameras of each run; the first view is rendered once untimed (warm-up), and
the reported rate is 1 / median seconds per frame. The websocket transfer is not included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fieldforge.apps.training.files import refuse_existing, write_atomic
from fieldforge.errors import FieldforgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--size", type=int, default=256, help="long side of the rendered view (pixels)")
    p.add_argument("--views", type=int, default=10, help="evenly spaced test cameras per run")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")


def bench_run(run_dir: str, size: int, views: int) -> dict:
    """Seconds per frame of each view of one run, and the median frame rate."""
    from fieldforge.apps.training.run import load_run
    from fieldforge.apps.viewer.render import display, render_size, viser_cameras, viser_pose

    method, train, scene = load_run(run_dir)
    cams = scene.split("test" if "test" in scene.splits else "train").cameras
    picks = torch.linspace(0, len(cams) - 1, min(views, len(cams))).round().long().tolist()
    background = torch.ones(3)

    def frame(i: int) -> float:
        pos, wxyz, fov = viser_pose(cams, i)
        aspect = float(cams.width[i]) / float(cams.height[i])
        h = render_size(aspect, size, int(cams.height[i]) * 4)
        t = time.perf_counter()
        with torch.no_grad():
            display(method.render(viser_cameras(pos, wxyz, fov, aspect, h).to(method.device), background), "rgb")
        return time.perf_counter() - t

    frame(picks[0])
    seconds = [frame(i) for i in picks]
    median = statistics.median(seconds)
    return {"run": str(run_dir), "method": train.method, "size": size, "views": picks, "seconds": seconds,
            "median_s": median, "fps": 1.0 / median}


def run(args) -> int:
    if args.size <= 0 or args.views <= 0:
        raise FieldforgeError("--size and --views must be positive")
    out = Path(args.out)
    refuse_existing(out, args.force)
    rows = [bench_run(r, args.size, args.views) for r in args.runs]
    for r in rows:
        print(f"{r['method']:>14}  {r['size']} px  {r['fps']:.1f} frames/s  ({r['median_s'] * 1e3:.0f} ms)  {r['run']}")
    write_atomic(out, json.dumps(rows, indent=2))
    print(f"wrote {out}")
    return 0
