"""``fieldforge bench kernels``: every kernel and one training step, reference and fast path side by side.

Each case builds its inputs once and runs the same call on both paths of its entry point
(``FIELDFORGE_KERNELS=torch``, then the fast path), alternating the two within each repeat so
that both see the same machine load; the reported time is the median of ``--repeats`` runs after
one untimed warm-up run of each path (which also compiles and caches the fast kernels). Peak
memory is the rise of the resident set (Linux ``VmHWM``, reset before each run) over the
resident set before the run (elsewhere, the process's peak so far).

Cases: hash-grid encoding (NGP's layout, 65,536 points, forward+backward to the table),
occupancy-grid traversal (4,096 rays through a grid occupied inside a sphere), packed
compositing (the traversal's samples, forward+backward), Gaussian projection, SH colours
(degree 3), tile binning, blending, the whole rasterizer (100,000 Gaussians, 200x200,
forward+backward), and one training step of ``ngp`` and of ``splat`` on a scene (the bundled
one unless ``--data``): the method is trained ``--warmup-steps`` steps, its state is
snapshotted, and each timed step starts from that snapshot (restored before the clock starts),
so both paths train on the same batch and the same number of samples.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from fieldforge import kernels
from fieldforge.apps.bench.runs import peak_memory_mb, reset_peak_memory, rss_mb
from fieldforge.apps.training.files import write_atomic
from fieldforge.errors import FieldforgeError

Case = Callable[[], object]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (kernels.json and kernels.md)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per path (median reported)")
    p.add_argument("--cases", default="all", help="comma list of hashgrid, traversal, composite, projection, sh, "
                   "binning, blend, rasterize, ngp-step, splat-step; or 'all'")
    p.add_argument("--data", default=None, help="scene of the training-step cases (default: the bundled scene)")
    p.add_argument("--downscale", type=int, default=1, help="image downscale of --data")
    p.add_argument("--warmup-steps", type=int, default=200, help="training steps before a training step is timed")
    p.add_argument("--gaussians", type=int, default=100_000, help="Gaussians of the rasterizer cases")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder's files")


@contextmanager
def kernel_path(path: str):
    """Run the block with ``FIELDFORGE_KERNELS`` set to ``path`` (``torch`` or ``auto``)."""
    old = os.environ.get("FIELDFORGE_KERNELS")
    os.environ["FIELDFORGE_KERNELS"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FIELDFORGE_KERNELS", None)
        else:
            os.environ["FIELDFORGE_KERNELS"] = old


def _run_once(fn: Case) -> tuple[float, float]:
    """Seconds and peak resident-set rise (MB) of one call; a case's ``prepare()``, if it has one,
    runs before it, untimed."""
    prepare = getattr(fn, "prepare", None)
    if prepare is not None:
        prepare()
    rss = rss_mb()
    reset_peak_memory("cpu")
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return dt, max(peak_memory_mb("cpu") - rss, 0.0)


def compare(name: str, fn: Case, repeats: int) -> dict:
    """Median time and peak memory of ``fn`` on the reference and the fast path."""
    times: dict[str, list[float]] = {"torch": [], "auto": []}
    peaks: dict[str, list[float]] = {"torch": [], "auto": []}
    for rep in range(repeats + 1):
        for path in ("torch", "auto"):
            with kernel_path(path):
                dt, peak = _run_once(fn)
            if rep:  # the first run of each path is the warm-up (compilation, caches)
                times[path].append(dt)
                peaks[path].append(peak)
    ref, fast = statistics.median(times["torch"]), statistics.median(times["auto"])
    return {"case": name, "reference_s": ref, "fast_s": fast, "speedup": ref / fast if fast > 0 else math.inf,
            "reference_peak_mb": max(peaks["torch"]), "fast_peak_mb": max(peaks["auto"]), "repeats": repeats}


# ----------------------------------------------------------------------------- kernel cases
def _hashgrid_case() -> Case:
    from fieldforge.encoders.hashgrid import HashGrid

    grid = HashGrid(3, 16, 2, 17, 16, max_resolution=1024)
    x = torch.rand(65536, 3, generator=torch.Generator().manual_seed(0))
    g = torch.randn(65536, grid.out_dim, generator=torch.Generator().manual_seed(1))

    def fn():
        grid.params.grad = None
        (grid(x) * g).sum().backward()
    return fn


def _sphere_grid():
    from fieldforge.render.occupancy import OccupancyGrid

    grid = OccupancyGrid([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5], 128)
    c = (grid.grid_coords.float() + 0.5) / 128 * 3 - 1.5
    occ = (c.norm(dim=-1) < 1.0).float()
    grid.occs.copy_(occ)
    grid.binaries = (occ > 0.5).view(grid.binaries.shape)
    return grid


def _rays(n: int):
    from fieldforge.scenes.rays import Rays

    gen = torch.Generator().manual_seed(2)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 4.0
    target = torch.rand(n, 3, generator=gen) - 0.5
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return Rays(origins, dirs)


def _traversal_case() -> Case:
    grid, rays = _sphere_grid(), _rays(4096)
    return lambda: grid.sample(rays, None, near=0.0, far=1e10, render_step_size=3 * math.sqrt(3) / 512)


def _composite_case() -> Case:
    from fieldforge.render.volume import composite

    grid, rays = _sphere_grid(), _rays(4096)
    ray_idx, t0, t1 = grid.sample(rays, None, render_step_size=3 * math.sqrt(3) / 512)
    gen = torch.Generator().manual_seed(3)
    sigma = (torch.rand(len(ray_idx), generator=gen) * 20).requires_grad_(True)
    rgb = torch.rand(len(ray_idx), 3, generator=gen).requires_grad_(True)
    bg = torch.ones(3)

    def fn():
        sigma.grad = rgb.grad = None
        out = composite(t0, t1, ray_idx, len(rays), sigma, rgb, bg)
        (out["rgb"].sum() + out["opacity"].sum() + out["depth"].sum()).backward()
    return fn


def _splat_scene(n: int):
    from fieldforge.apps.bench.splat import random_view

    params, viewmats, Ks = random_view(n, 200, 200)
    return [p.requires_grad_(True) for p in params], viewmats, Ks


def _projection_case(n: int) -> Case:
    from fieldforge.render.raster_project import project_gaussians

    (means, quats, scales, opac, _), viewmats, Ks = _splat_scene(n)

    def fn():
        for p in (means, quats, scales):
            p.grad = None
        _, m2, depth, conics = project_gaussians(means, quats, scales, viewmats, Ks, 200, 200, opacities=opac)
        (m2.sum() + depth.sum() + conics.sum()).backward()
    return fn


def _sh_case(n: int) -> Case:
    from fieldforge.render.rasterize import sh_colors

    gen = torch.Generator().manual_seed(4)
    dirs = torch.randn(n, 3, generator=gen).requires_grad_(True)
    coeffs = (torch.randn(n, 16, 3, generator=gen) * 0.3).requires_grad_(True)

    def fn():
        dirs.grad = coeffs.grad = None
        sh_colors(3, dirs, coeffs).sum().backward()
    return fn


def _projected(n: int):
    from fieldforge.render.raster_project import project_gaussians

    (means, quats, scales, opac, colors), viewmats, Ks = _splat_scene(n)
    with torch.no_grad():
        radii, m2, depth, conics = project_gaussians(means, quats, scales, viewmats, Ks, 200, 200, opacities=opac)
    vis = (radii[0] > 0).all(-1)
    return m2[0][vis], radii[0][vis], depth[0][vis], conics[0][vis], opac.detach()[vis], colors.detach()[vis]


def _binning_case(n: int) -> Case:
    from fieldforge.render.raster_tiles import bin_tiles

    m2, radii, depth, *_ = _projected(n)
    return lambda: bin_tiles(m2, radii, depth, 200, 200, 16)


def _blend_case(n: int) -> Case:
    from fieldforge.render.raster_composite import composite_tiles
    from fieldforge.render.raster_tiles import bin_tiles

    m2, radii, depth, conics, opac, colors = _projected(n)
    bins = bin_tiles(m2, radii, depth, 200, 200, 16)
    leaves = [t.clone().requires_grad_(True) for t in (m2, conics, opac, colors)]
    bg = torch.ones(3)

    def fn():
        for t in leaves:
            t.grad = None
        rgb, alpha = composite_tiles(*leaves, bg, bins, 200, 200)
        (rgb.sum() + alpha.sum()).backward()
    return fn


def _rasterize_case(n: int) -> Case:
    from fieldforge.render.rasterize import rasterize

    params, viewmats, Ks = _splat_scene(n)
    bg = torch.ones(1, 3)

    def fn():
        for p in params:
            p.grad = None
        img, alpha, _ = rasterize(*params, viewmats, Ks, 200, 200, backgrounds=bg)
        (img.sum() + alpha.sum()).backward()
    return fn


# ----------------------------------------------------------------------------- training steps
def _step_case(method_name: str, data: str | None, downscale: int, warmup: int) -> tuple[Case, dict]:
    """One training step of a method from a snapshot taken after ``warmup`` steps."""
    from fieldforge.apps.training.methods import get_method
    from fieldforge.scenes import load

    from fieldforge.apps.training.run import default_scene_path

    scene = load(data or default_scene_path(), downscale=downscale)
    torch.manual_seed(0)  # the occupancy grid's updates draw from the global generator: the same snapshot every run
    cls = get_method(method_name)
    method = cls(cls.Config(), scene.split("train"), torch.device("cpu"))
    for step in range(warmup):
        method.train_step(step)
    step = _RestoredStep(method, warmup)
    return step, step.info  # filled by the timed calls


class _RestoredStep:
    """One training step of ``method`` at step ``step``; ``prepare()`` (untimed) restores the
    state and random generator of the snapshot taken at construction, so every timed call trains
    on the same batch and the same number of samples. The outputs' "samples", "rays" and
    "gaussians" are kept in ``info``."""

    def __init__(self, method, step: int):
        self.method, self.step = method, step
        self.snapshot, self.rng = copy.deepcopy(method.state_dict()), torch.get_rng_state()
        self.info: dict = {}

    def prepare(self) -> None:
        self.method.load_state_dict(copy.deepcopy(self.snapshot))
        torch.set_rng_state(self.rng)

    def __call__(self) -> None:
        out = self.method.train_step(self.step)
        self.info.update({k: float(v) for k, v in out.items() if k in ("samples", "rays", "gaussians")})


def run(args) -> int:
    if args.repeats < 1:
        raise FieldforgeError(f"--repeats must be >= 1, got {args.repeats}")
    out = Path(args.out)
    files = [out / "kernels.json", out / "kernels.md"]
    if not args.force and any(f.exists() for f in files):
        raise FieldforgeError(f"{out}: kernels.json or kernels.md exists (use --force to overwrite)")
    n = args.gaussians
    cases: dict[str, tuple[str, Callable[[], tuple[Case, dict]]]] = {
        "hashgrid": ("hash grid fwd+bwd (65,536 points, 16 levels)", lambda: (_hashgrid_case(), {})),
        "traversal": ("occupancy traversal (4,096 rays)", lambda: (_traversal_case(), {})),
        "composite": ("packed compositing fwd+bwd", lambda: (_composite_case(), {})),
        "projection": (f"projection fwd+bwd ({n:,} Gaussians)", lambda: (_projection_case(n), {})),
        "sh": (f"SH degree 3 fwd+bwd ({n:,})", lambda: (_sh_case(n), {})),
        "binning": (f"tile binning ({n:,}, 200x200)", lambda: (_binning_case(n), {})),
        "blend": (f"blending fwd+bwd ({n:,}, 200x200)", lambda: (_blend_case(n), {})),
        "rasterize": (f"rasterize fwd+bwd ({n:,}, 200x200)", lambda: (_rasterize_case(n), {})),
        "ngp-step": ("ngp training step", lambda: _step_case("ngp", args.data, args.downscale, args.warmup_steps)),
        "splat-step": ("splat training step", lambda: _step_case("splat", args.data, args.downscale, args.warmup_steps)),
    }
    wanted = list(cases) if args.cases == "all" else [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in cases]
    if unknown:
        raise FieldforgeError(f"--cases: unknown {unknown}; known: {', '.join(cases)}")
    rows = []
    header = f"{'case':<44} {'reference s':>12} {'fast s':>9} {'speedup':>8} {'ref MB':>7} {'fast MB':>8}"
    print(f"kernels: fast path = {kernels.backend()}, threads = {torch.get_num_threads()}, repeats = {args.repeats}")
    print(header)
    for key in wanted:
        name, make = cases[key]
        fn, info = make()
        row = {**compare(name, fn, args.repeats), **info}
        rows.append(row)
        print(f"{name:<44} {row['reference_s']:12.4f} {row['fast_s']:9.4f} {row['speedup']:7.1f}x "
              f"{row['reference_peak_mb']:7.0f} {row['fast_peak_mb']:8.0f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    result = {"backend": kernels.backend(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "rows": rows}
    table = ["| case | reference s | fast s | speedup | reference peak MB | fast peak MB |", "|---|---|---|---|---|---|"]
    table += [f"| {r['case']} | {r['reference_s']:.4f} | {r['fast_s']:.4f} | {r['speedup']:.1f}x | "
              f"{r['reference_peak_mb']:.0f} | {r['fast_peak_mb']:.0f} |" for r in rows]
    write_atomic(files[0], json.dumps(result, indent=2))
    write_atomic(files[1], "\n".join(table) + "\n")
    print(f"wrote {files[0]} and {files[1]}")
    return 0
