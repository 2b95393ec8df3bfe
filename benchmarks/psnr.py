"""Thin script for ``fieldforge bench psnr`` (methods x scenes: PSNR, SSIM, train time, render time, peak memory, parameters; Markdown + JSON table and a PSNR-vs-time plot).

    python benchmarks/psnr.py [--methods ngp,splat,nerf] [--scenes DIR,...] [--minutes 2,5] [--workers 1] [--out benchmarks/results/psnr]
"""

import sys

from fieldforge.apps.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "psnr", *sys.argv[1:]]))
