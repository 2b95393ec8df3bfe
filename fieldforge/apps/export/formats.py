"""A trained run in a standard interchange format (``fieldforge export``).

- ``mesh`` (.ply or .obj): marching cubes of a field run's density on a grid over the field's
  box, coloured by the field (:mod:`fieldforge.apps.export.mesh`); ``resolution`` cells on
  the longest axis, ``threshold`` density (default ln 2 / voxel size: a voxel-thick slab 50%
  opaque), ``clean`` removes small components and degenerate triangles (open3d). Splat runs
  are refused (they have no density field): export their ``pointcloud`` or ``splat-ply``.
- ``pointcloud`` (.ply): rendered depth of the training cameras (``num_views`` of them, at
  ``downscale``) unprojected where the opacity exceeds 0.5, coloured by the rendered rgb;
  any method (:mod:`fieldforge.apps.export.points`). ``max_points`` subsamples at random.
- ``splat-ply`` (.ply): the standard 3DGS .ply (:mod:`fieldforge.fields.splat_ply`); a
  ``splat`` run's Gaussians exactly, any other run by an approximate conversion of its
  ``pointcloud`` (one isotropic Gaussian per pixel footprint).
- ``points`` (.ply): a ``splat`` run's Gaussian centres coloured by their SH DC term (trimesh).
- ``cameras`` (.json): the run's training cameras as a camera-path JSON (OpenCV convention)
  that ``fieldforge render --path`` reads back.

Files are written to a temporary name beside OUT and renamed, so an interrupted or failed
export never leaves half a file; an existing OUT is kept unless ``force`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fieldforge.apps.export.mesh import clean_mesh, extract_mesh, rgba8
from fieldforge.apps.export.points import pick_views, points_to_gaussians, render_points, subsample
from fieldforge.apps.training.files import refuse_existing, staged
from fieldforge.apps.training.run import load_run
from fieldforge.errors import FieldforgeError
from fieldforge.fields.gaussians import SH_C0


@dataclass(frozen=True)
class ExportOptions:
    """The run being exported (named in errors) and the options of each format: the mesh grid's
    cells on the longest axis, density level, cleaning and time in [0, 1]; the rendered views
    (count, resolution divisor) and point budget of ``pointcloud`` and a field's ``splat-ply``."""

    run: str
    resolution: int = 256
    threshold: float | None = None
    clean: bool = False
    time: float | None = None
    num_views: int | None = None
    downscale: float = 1.0
    max_points: int | None = None


def _splat_model(method, run: str):
    model = method.gaussians
    if model is None:
        raise FieldforgeError(f"{run}: method {method.name!r} has no Gaussians (points needs a splat run)")
    return model


def _rendered_points(method, opts: ExportOptions) -> dict:
    cams = method.train_cameras.to("cpu")
    cams = cams[pick_views(len(cams), opts.num_views).tolist()].scaled(1.0 / opts.downscale)
    points = subsample(render_points(method, cams), opts.max_points)
    if not len(points["xyz"]):
        raise FieldforgeError(f"{opts.run}: no rendered pixel has opacity > 0.5; nothing to export")
    return points


def _mesh(method, opts: ExportOptions, tmp: Path) -> str:
    field = method.radiance_field
    if field is None:
        raise FieldforgeError(f"{opts.run}: method {method.name!r} has no density field to mesh "
                              "(export pointcloud or splat-ply instead)")
    mesh = extract_mesh(field, opts.resolution, opts.threshold, opts.time)
    if opts.clean:
        mesh = clean_mesh(mesh)
    mesh.export(tmp)
    return f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces"


def _pointcloud(method, opts: ExportOptions, tmp: Path) -> str:
    import trimesh

    points = _rendered_points(method, opts)
    cloud = trimesh.PointCloud(points["xyz"].numpy(), colors=rgba8(points["rgb"].numpy()))
    tmp.write_bytes(cloud.export(file_type="ply"))
    return f"{len(points['xyz'])} points"


def _splat_ply(method, opts: ExportOptions, tmp: Path) -> str:
    from fieldforge.fields import splat_ply

    model = method.gaussians
    if model is not None:
        return f"{splat_ply.write(tmp, model)} Gaussians"
    n = splat_ply.write(tmp, points_to_gaussians(_rendered_points(method, opts)))
    return f"{n} Gaussians, approximate conversion from rendered depth"


def _points(method, opts: ExportOptions, tmp: Path) -> str:
    import trimesh

    model = _splat_model(method, opts.run)
    xyz = model.means.detach().cpu().numpy()
    rgb = 0.5 + SH_C0 * model.sh0.detach().reshape(len(xyz), 3).cpu().numpy()
    ok = np.isfinite(xyz).all(1)
    tmp.write_bytes(trimesh.PointCloud(xyz[ok], colors=rgba8(rgb[ok])).export(file_type="ply"))
    return f"{int(ok.sum())} points"


def _cameras(method, opts: ExportOptions, tmp: Path) -> str:
    from fieldforge.scenes.paths import save_path

    cams = method.train_cameras.to("cpu")
    save_path(tmp, cams)
    return f"{len(cams)} cameras"


FORMATS = {"mesh": _mesh, "pointcloud": _pointcloud, "splat-ply": _splat_ply, "points": _points,
           "cameras": _cameras}
SUFFIXES = {"mesh": (".ply", ".obj"), "pointcloud": (".ply",), "splat-ply": (".ply",), "points": (".ply",),
            "cameras": (".json",)}


def export(fmt: str, out: Path, opts: ExportOptions, force: bool = False) -> str:
    """Write the run ``opts.run`` as ``fmt`` to ``out``; a one-line summary of what was written."""
    if out.suffix.lower() not in SUFFIXES[fmt]:
        raise FieldforgeError(f"{out}: --format {fmt} writes {' or '.join(SUFFIXES[fmt])} files")
    refuse_existing(out, force)
    if not out.parent.is_dir():
        raise FieldforgeError(f"{out.parent}: output directory does not exist")
    method, _, _ = load_run(opts.run)
    with staged(out, force) as tmp:
        return FORMATS[fmt](method, opts, tmp)
