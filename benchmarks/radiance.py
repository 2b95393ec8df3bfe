"""Thin script for ``fieldforge bench radiance`` (field methods: PSNR, render time and size at 2, 5, 10 minutes of training; kilonerf distilled from nerf).

    python benchmarks/radiance.py [--methods nerf,ngp,kilonerf,rbf,cam] [--minutes 2,5,10] [--test-images 25]
"""

import sys

from fieldforge.apps.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "radiance", *sys.argv[1:]]))
