"""``fieldforge export``: write a trained run in a standard interchange format.

    fieldforge export RUN --format splat-ply|points|cameras -o OUT [--force]

- ``splat-ply``: a ``splat`` run's Gaussians as the standard 3DGS .ply (:mod:`fieldforge.fields.splat_ply`).
- ``points``: a ``splat`` run's Gaussian centres coloured by their SH DC term, as a plain
  x y z red green blue .ply point cloud (trimesh).
- ``cameras``: the run's training cameras as a camera-path JSON (OpenCV convention) that
  ``fieldforge render --path`` reads back.

Files are written to a temporary name beside OUT and renamed, so an interrupted export never
leaves half a file; an existing OUT is kept unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from fieldforge.apps.run import load_run
from fieldforge.errors import FieldforgeError
from fieldforge.fields.gaussians import SH_C0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (from fieldforge train)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="what to write")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")


def _splat_model(method, run: str):
    model = getattr(method, "model", None)
    if model is None or not hasattr(model, "means"):
        raise FieldforgeError(f"{run}: method {method.name!r} has no Gaussians (splat-ply and points need a splat run)")
    return model


def _splat_ply(method, run: str, tmp: Path) -> str:
    from fieldforge.fields import splat_ply

    n = splat_ply.write(tmp, _splat_model(method, run))
    return f"{n} Gaussians"


def _points(method, run: str, tmp: Path) -> str:
    import trimesh

    model = _splat_model(method, run)
    xyz = model.means.detach().cpu().numpy()
    rgb = (0.5 + SH_C0 * model.sh0.detach().reshape(len(xyz), 3).cpu().numpy()).clip(0, 1)
    ok = np.isfinite(xyz).all(1)
    colors = np.concatenate([rgb[ok] * 255, np.full((int(ok.sum()), 1), 255.0)], 1).round().astype(np.uint8)
    with open(tmp, "wb") as f:
        f.write(trimesh.PointCloud(xyz[ok], colors=colors).export(file_type="ply"))
    return f"{int(ok.sum())} points"


def _cameras(method, run: str, tmp: Path) -> str:
    from fieldforge.render.paths import save_path

    cams = method.cameras.to("cpu")
    save_path(tmp, cams)
    return f"{len(cams)} cameras"


FORMATS = {"splat-ply": _splat_ply, "points": _points, "cameras": _cameras}


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FieldforgeError(f"{out}: already exists (pass --force to overwrite)")
    if not out.parent.is_dir():
        raise FieldforgeError(f"{out.parent}: output directory does not exist")
    method, _, _ = load_run(args.run)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}{out.suffix}")
    try:
        what = FORMATS[args.format](method, args.run, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({what})")
    return 0
