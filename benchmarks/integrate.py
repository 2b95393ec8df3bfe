"""Monte Carlo vs piecewise-linear control variates on direct illumination (``fieldforge bench integrate``).

Protocol: 64x64 pixels, 32 spp for both estimators (the CV spends half of them fitting g and
alpha), an equal-wall-time plain-MC row, reference 4096-spp jittered stratified MC, seed 0,
one torch thread. Writes benchmarks/results/integrate.json and integrate.png
(reference | MC | CV). Run from the repository root: ``PYTHONPATH=. python benchmarks/integrate.py``.
"""

import sys
from pathlib import Path

from fieldforge.apps.cli.main import main

if __name__ == "__main__":
    results = Path(__file__).resolve().parent / "results"
    sys.exit(main(["bench", "integrate", "--resolution", "64", "--spp", "32", "--ref-spp", "4096", "--seed", "0",
                   "--out", str(results / "integrate.json"), "--png", str(results / "integrate.png"),
                   *sys.argv[1:]]))
