"""Thin script for ``fieldforge bench splat`` (rasterizer speed/memory; optional timed training).

    python benchmarks/splat.py [--sizes 10000,100000,300000]   # -> benchmarks/results/splat.json
    python benchmarks/splat.py --sizes "" --train "$FIELDFORGE_DATA/nerf-synthetic-lego-200" --minutes 10

Later arguments override the default output path.
"""

import sys
from pathlib import Path

from fieldforge.apps.cli.main import main

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results" / "splat.json"
    sys.exit(main(["bench", "splat", "-o", str(out), *sys.argv[1:]]))
