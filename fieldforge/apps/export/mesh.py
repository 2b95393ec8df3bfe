"""Meshes from a field's density: a chunked grid, marching cubes, colours from the field.

Grid: points ``aabb[0] + h * (i, j, k)`` covering the field's box (:attr:`Field.aabb`, world
units) with ``resolution`` cells on its longest axis, so the spacing is h = longest extent /
``resolution`` on every axis. Density is evaluated ``chunk`` points at a time under
``no_grad`` (memory bounded by the chunk, plus the float32 grid itself).

Level: ``threshold`` is a density (1/world-units). The default ln(2) / h is the density at which
one voxel-thick slab is 50% opaque (alpha = 1 - exp(-sigma h) = 0.5).

Colour: the field's rgb at each vertex, viewed along the inward normal (direction = -normal,
i.e. as a camera in front of the surface looking straight at it). Faces wind so that normals
point out of the dense region (towards decreasing density).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor

from fieldforge.errors import FieldforgeError
from fieldforge.fields.base import Field

#: bytes per grid point: the float32 grid (4) plus an allowance for marching cubes' vertices,
#: normals and faces (~52 B per vertex, at most one vertex per 4 grid points for a surface)
BYTES_PER_VOXEL = 16


def rgba8(rgb: np.ndarray) -> np.ndarray:
    """Opaque uint8 RGBA [N, 4] from linear rgb [N, 3] in [0, 1] (the .ply/.obj colour layout)."""
    rgb = np.clip(rgb, 0, 1) * 255
    return np.concatenate([rgb, np.full((len(rgb), 1), 255.0)], 1).round().astype(np.uint8)


def grid_shape(aabb: Tensor, resolution: int) -> tuple[tuple[int, int, int], float]:
    """Grid points per axis and the spacing h for ``resolution`` cells on the longest axis."""
    extent = (aabb[1] - aabb[0]).double()
    h = float(extent.max()) / resolution
    n = (torch.round(extent / h).long() + 1).tolist()
    return (n[0], n[1], n[2]), h


def available_memory() -> int:
    """Available physical memory in bytes (``os.sysconf``)."""
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(shape: tuple[int, int, int], resolution: int) -> None:
    """Refuse a grid whose estimated footprint exceeds half the available memory."""
    need = math.prod(shape) * BYTES_PER_VOXEL
    avail = available_memory()
    if need > avail / 2:
        raise FieldforgeError(
            f"--resolution {resolution}: a {shape[0]}x{shape[1]}x{shape[2]} grid needs about {need / 2**30:.1f} GiB "
            f"for marching cubes, more than half of the {avail / 2**30:.1f} GiB available; lower --resolution")


@torch.no_grad()
def density_grid(field: Field, shape: tuple[int, int, int], h: float, t: float | None = None,
                 chunk: int = 2**18) -> np.ndarray:
    """Density [nx, ny, nz] (float32) at ``field.aabb[0] + h * (i, j, k)``, ``chunk`` points at a time."""
    dev = field.aabb.device
    nx, ny, nz = shape
    axes = [torch.arange(n, device=dev, dtype=torch.float32) * h for n in shape]
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)
    slab = max(1, chunk // (ny * nz))
    out = np.empty(shape, dtype=np.float32)
    for i in range(0, nx, slab):
        xs = axes[0][i:i + slab]
        x = torch.cat([xs[:, None, None].expand(-1, len(yz), 1), yz.expand(len(xs), -1, -1)], -1).reshape(-1, 3)
        x = x + field.aabb[0]
        times = None if t is None else torch.full((len(x), 1), t, device=dev)
        out[i:i + slab] = field.density(x, times).reshape(len(xs), ny, nz).float().cpu().numpy()
    return out


@torch.no_grad()
def vertex_colors(field: Field, vertices: np.ndarray, normals: np.ndarray, t: float | None = None,
                  chunk: int = 2**16) -> np.ndarray:
    """rgb [V, 3] in [0, 1] of the field at ``vertices`` seen along ``-normals``."""
    dev = field.aabb.device
    x = torch.as_tensor(vertices, dtype=torch.float32, device=dev)
    d = -torch.nn.functional.normalize(torch.tensor(normals, dtype=torch.float32, device=dev), dim=-1)
    parts = []
    for s in range(0, len(x), chunk):
        times = None if t is None else torch.full((len(x[s:s + chunk]), 1), t, device=dev)
        parts.append(field(x[s:s + chunk], d[s:s + chunk], times)["rgb"])
    rgb = torch.cat(parts) if parts else x.new_zeros(0, 3)
    return rgb.clamp(0, 1).cpu().numpy()


def extract_mesh(field: Field, resolution: int = 256, threshold: float | None = None, t: float | None = None):
    """Marching-cubes mesh (``trimesh.Trimesh``, world units, vertex colours) of ``field``'s
    density at ``threshold`` (None: ln 2 / h), after checking the grid fits in memory."""
    import trimesh
    from skimage import measure

    shape, h = grid_shape(field.aabb, resolution)
    check_memory(shape, resolution)
    level = math.log(2.0) / h if threshold is None else float(threshold)
    grid = density_grid(field, shape, h, t)
    lo, hi = float(grid.min()), float(grid.max())
    if not lo < level < hi:
        raise FieldforgeError(f"no surface at density {level:.4g}: the field's density on the grid spans "
                              f"[{lo:.4g}, {hi:.4g}] (set --threshold inside that range)")
    verts, faces, _, _ = measure.marching_cubes(grid, level, spacing=(h, h, h), gradient_direction="ascent")
    mesh = trimesh.Trimesh(verts + field.aabb[0].cpu().numpy(), faces, process=False)
    rgb = vertex_colors(field, mesh.vertices, mesh.vertex_normals, t)
    mesh.visual.vertex_colors = rgba8(rgb)
    return mesh


def clean_mesh(mesh, min_fraction: float = 0.05):
    """open3d cleanup: drop degenerate and duplicated triangles, unreferenced vertices and every
    connected component with fewer than ``min_fraction`` of the largest component's triangles."""
    try:
        import open3d as o3d
    except (ImportError, OSError) as e:  # OSError: libusb-1.0 missing on Linux
        raise FieldforgeError(f"--clean needs open3d (pip install open3d; on Linux also apt install "
                              f"libusb-1.0-0): {str(e).strip()}") from None
    import trimesh

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(mesh.vertices, dtype=np.float64)),
                                  o3d.utility.Vector3iVector(np.asarray(mesh.faces, dtype=np.int32)))
    m.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.visual.vertex_colors[:, :3], np.float64) / 255)
    m.remove_degenerate_triangles()
    m.remove_duplicated_triangles()
    m.remove_duplicated_vertices()
    labels, counts, _ = m.cluster_connected_triangles()
    labels, counts = np.asarray(labels), np.asarray(counts)
    if len(counts):
        m.remove_triangles_by_mask(counts[labels] < min_fraction * counts.max())
    m.remove_unreferenced_vertices()
    return trimesh.Trimesh(np.asarray(m.vertices), np.asarray(m.triangles),
                           vertex_colors=rgba8(np.asarray(m.vertex_colors)), process=False)
