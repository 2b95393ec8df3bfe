"""Thin script for ``fieldforge bench splat`` (rasterizer speed/memory; optional timed training).

    PYTHONPATH=. python benchmarks/splat.py [--sizes 10000,100000,300000] [-o bench_splat.json]
    PYTHONPATH=. python benchmarks/splat.py --sizes "" --train ../shared/data/nerf-synthetic-lego-200 --minutes 10
"""

import sys

from fieldforge.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "splat", *sys.argv[1:]]))
