"""How many linear regions exact integration handles, and at what cost, in 1, 2 and 3 dimensions.

Protocol: random ReLU MLPs (PyTorch default init, seed 0, float64) with 1, 2 or 3 inputs, one
output, hidden ``width`` x ``depth``; ``fieldforge.fields.piecewise.regions`` over the unit box
[0, 1]^d; the region count, wall time of the region
listing and the integral's relative error against a midpoint grid (1-D 1e6 points, 2-D 1000^2,
3-D 100^3). One torch thread. Prints a table and writes benchmarks/results/pl_regions.json.
Run from the repository root: ``python benchmarks/pl_regions.py``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from fieldforge.fields.piecewise import integrate, regions

CASES = [(1, 64, 3), (1, 256, 4), (2, 16, 2), (2, 32, 3), (2, 64, 3), (3, 8, 2), (3, 16, 2), (3, 16, 3),
         (3, 32, 2), (3, 32, 3)]
GRID = {1: 1_000_000, 2: 1000, 3: 100}


def net(d: int, width: int, depth: int) -> nn.Sequential:
    torch.manual_seed(0)
    mods, k = [], d
    for _ in range(depth):
        mods += [nn.Linear(k, width), nn.ReLU()]
        k = width
    return nn.Sequential(*mods, nn.Linear(k, 1)).double()


@torch.no_grad()
def midpoint(m: nn.Module, d: int) -> float:
    n = GRID[d]
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    pts = torch.stack(torch.meshgrid(*[c] * d, indexing="ij"), -1).reshape(-1, d)
    return float(torch.cat([m(p) for p in pts.split(1 << 18)]).mean())


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for d, width, depth in CASES:
        m = net(d, width, depth)
        t0 = time.perf_counter()
        r = regions(m, [0.0] * d, [1.0] * d, max_regions=1_000_000)
        seconds = time.perf_counter() - t0
        exact = float(integrate(m, [0.0] * d, [1.0] * d, max_regions=1_000_000)[0].detach())
        ref = midpoint(m, d)
        rows.append({"dim": d, "width": width, "depth": depth, "regions": int(r.volume.numel()),
                     "seconds": round(seconds, 3), "rel_diff_midpoint": abs(exact - ref) / max(abs(ref), 1e-12)})
        print(f"{d}-D  {width:4d} x {depth}  regions {rows[-1]['regions']:8d}  {seconds:8.3f} s  "
              f"|exact - midpoint| / |midpoint| {rows[-1]['rel_diff_midpoint']:.1e}", flush=True)
    out = Path(__file__).resolve().parent / "results" / "pl_regions.json"
    protocol = {"networks": "random ReLU MLP, torch default init, seed 0, float64", "domain": "unit box",
                "midpoint_grid": GRID, "threads": 1, "machine": f"{platform.machine()} {platform.processor()}",
                "torch": torch.__version__}
    out.write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
