"""Fit 2-D images and a 3-D occupancy with every encoding (``fieldforge bench signals``).

Protocol (the verb's defaults, see fieldforge/apps/bench/signals.py): camera, astronaut and
the synthetic wide-band image at 96^2 (train on the even 48^2 lattice, PSNR on the other
pixels), occupancy of the Spot mesh from $FIELDFORGE_DATA/meshes (8192 points; skipped when
absent), 200 full-batch Adam steps, 3 x 128 ReLU MLP after each encoding, FreSh over
sigma in {1, 2, 4, 8, 16} against training all of them, RBF grid vs Fourier MLP at equal wall
time, seed 0, one torch thread. Writes benchmarks/results/signals.json.
Run from the repository root: ``PYTHONPATH=. python benchmarks/signals.py``.
"""

import sys
from pathlib import Path

from fieldforge.apps.cli.main import main

if __name__ == "__main__":
    results = Path(__file__).resolve().parent / "results"
    sys.exit(main(["bench", "signals", "--signals", "camera,astronaut,wideband,mesh:spot", "--steps", "200",
                   "--size", "96", "--points", "8192", "--sigmas", "1,2,4,8,16", "--threads", "1", "--seed", "0",
                   "--out", str(results / "signals.json"), *sys.argv[1:]]))
