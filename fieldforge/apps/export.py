"""``fieldforge export``: write a trained run in a standard interchange format.

    fieldforge export RUN --format mesh|pointcloud|splat-ply|points|cameras -o OUT [--force]

- ``mesh`` (.ply or .obj): marching cubes of a field run's density on a grid over the field's
  box, coloured by the field (:mod:`fieldforge.apps.export_mesh`); ``--resolution`` cells on
  the longest axis, ``--threshold`` density (default ln 2 / voxel size: a voxel-thick slab 50%
  opaque), ``--clean`` removes small components and degenerate triangles (open3d). Splat runs
  are refused (they have no density field): export their ``pointcloud`` or ``splat-ply``.
- ``pointcloud`` (.ply): rendered depth of the training cameras (``--num-views`` of them, at
  ``--downscale``) unprojected where the opacity exceeds 0.5, coloured by the rendered rgb;
  any method (:mod:`fieldforge.apps.export_points`). ``--max-points`` subsamples at random.
- ``splat-ply`` (.ply): the standard 3DGS .ply (:mod:`fieldforge.fields.splat_ply`); a
  ``splat`` run's Gaussians exactly, any other run by an approximate conversion of its
  ``pointcloud`` (one isotropic Gaussian per pixel footprint).
- ``points`` (.ply): a ``splat`` run's Gaussian centres coloured by their SH DC term (trimesh).
- ``cameras`` (.json): the run's training cameras as a camera-path JSON (OpenCV convention)
  that ``fieldforge render --path`` reads back.

Files are written to a temporary name beside OUT and renamed, so an interrupted or failed
export never leaves half a file; an existing OUT is kept unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fieldforge.apps.export_mesh import clean_mesh, extract_mesh, rgba8
from fieldforge.apps.export_points import (pick_views, points_to_gaussians, render_points,
                                           subsample)
from fieldforge.apps.files import refuse_existing, staged
from fieldforge.apps.run import load_run
from fieldforge.errors import FieldforgeError
from fieldforge.fields.gaussians import SH_C0


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (from fieldforge train)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="what to write")
    p.add_argument("-o", "--output", required=True, help="output file (suffix: see the format)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    g = p.add_argument_group("mesh")
    g.add_argument("--resolution", type=_positive(int), default=256, help="grid cells on the longest axis")
    g.add_argument("--threshold", type=float, default=None,
                   help="density level (1/world units; default ln 2 / voxel size)")
    g.add_argument("--clean", action="store_true", help="drop small components and degenerate triangles (open3d)")
    g.add_argument("--time", type=float, default=None, help="time in [0, 1] for dynamic fields")
    g = p.add_argument_group("pointcloud and field splat-ply")
    g.add_argument("--num-views", type=_positive(int), default=None, help="training cameras to render (default all)")
    g.add_argument("--downscale", type=_positive(float), default=1.0, help="render at 1/downscale resolution")
    g.add_argument("--max-points", type=_positive(int), default=None, help="random subsample to at most this many")
    p.error = lambda message: p.exit(2, f"{p.prog}: error: {message}\n")  # one line, no usage block


def _splat_model(method, run: str):
    model = method.gaussians
    if model is None:
        raise FieldforgeError(f"{run}: method {method.name!r} has no Gaussians (points needs a splat run)")
    return model


def _rendered_points(method, args: argparse.Namespace) -> dict:
    cams = method.train_cameras.to("cpu")
    cams = cams[pick_views(len(cams), args.num_views).tolist()].scaled(1.0 / args.downscale)
    points = subsample(render_points(method, cams), args.max_points)
    if not len(points["xyz"]):
        raise FieldforgeError(f"{args.run}: no rendered pixel has opacity > 0.5; nothing to export")
    return points


def _mesh(method, args: argparse.Namespace, tmp: Path) -> str:
    field = method.radiance_field
    if field is None:
        raise FieldforgeError(f"{args.run}: method {method.name!r} has no density field to mesh "
                              "(export pointcloud or splat-ply instead)")
    mesh = extract_mesh(field, args.resolution, args.threshold, args.time)
    if args.clean:
        mesh = clean_mesh(mesh)
    mesh.export(tmp)
    return f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces"


def _pointcloud(method, args: argparse.Namespace, tmp: Path) -> str:
    import trimesh

    points = _rendered_points(method, args)
    cloud = trimesh.PointCloud(points["xyz"].numpy(), colors=rgba8(points["rgb"].numpy()))
    tmp.write_bytes(cloud.export(file_type="ply"))
    return f"{len(points['xyz'])} points"


def _splat_ply(method, args: argparse.Namespace, tmp: Path) -> str:
    from fieldforge.fields import splat_ply

    model = method.gaussians
    if model is not None:
        return f"{splat_ply.write(tmp, model)} Gaussians"
    n = splat_ply.write(tmp, points_to_gaussians(_rendered_points(method, args)))
    return f"{n} Gaussians, approximate conversion from rendered depth"


def _points(method, args: argparse.Namespace, tmp: Path) -> str:
    import trimesh

    model = _splat_model(method, args.run)
    xyz = model.means.detach().cpu().numpy()
    rgb = 0.5 + SH_C0 * model.sh0.detach().reshape(len(xyz), 3).cpu().numpy()
    ok = np.isfinite(xyz).all(1)
    tmp.write_bytes(trimesh.PointCloud(xyz[ok], colors=rgba8(rgb[ok])).export(file_type="ply"))
    return f"{int(ok.sum())} points"


def _cameras(method, args: argparse.Namespace, tmp: Path) -> str:
    from fieldforge.scenes.paths import save_path

    cams = method.train_cameras.to("cpu")
    save_path(tmp, cams)
    return f"{len(cams)} cameras"


FORMATS = {"mesh": _mesh, "pointcloud": _pointcloud, "splat-ply": _splat_ply, "points": _points,
           "cameras": _cameras}
SUFFIXES = {"mesh": (".ply", ".obj"), "pointcloud": (".ply",), "splat-ply": (".ply",), "points": (".ply",),
            "cameras": (".json",)}


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in SUFFIXES[args.format]:
        raise FieldforgeError(f"{out}: --format {args.format} writes {' or '.join(SUFFIXES[args.format])} files")
    refuse_existing(out, args.force)
    if not out.parent.is_dir():
        raise FieldforgeError(f"{out.parent}: output directory does not exist")
    method, _, _ = load_run(args.run)
    with staged(out, args.force) as tmp:
        what = FORMATS[args.format](method, args, tmp)
    print(f"wrote {out} ({what})")
    return 0
