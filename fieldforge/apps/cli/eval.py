"""``fieldforge eval RUN [--split test] [--max-images N]``: render a split of a run, write per-image
metrics and PNGs to ``RUN/eval/<split>`` (:mod:`fieldforge.apps.training.evaluate`)."""

from __future__ import annotations

import argparse
import json

from fieldforge.apps.training.evaluate import evaluate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test")
    p.add_argument("--max-images", type=int, default=None, help="evenly spaced subset of the split")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-images", action="store_true", help="do not write the rendered PNGs")


def run(args: argparse.Namespace) -> int:
    r = evaluate(args.run, args.split, args.max_images, args.device, not args.no_images)
    print(json.dumps({k: r[k] for k in ("split", "psnr", "ssim", "num_images", "render_seconds_per_image")}))
    return 0
