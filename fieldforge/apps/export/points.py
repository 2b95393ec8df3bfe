"""Point clouds from rendered depth, and an approximate field -> Gaussian splat conversion.

Works for every method through ``method.render``. Each chosen camera is rendered on a black
background; pixels with opacity > ``min_opacity`` are unprojected at their expected depth and
coloured by the rendered rgb divided by the opacity (straight, not premultiplied, colour).

Depth conventions differ by renderer: the ray marcher's "depth" is the expected distance along
the unit ray (:mod:`fieldforge.scenes.rays`), the rasterizer's is the expected camera-space z
(gsplat's "ED"). the method's ``depth`` attribute tells them apart; :func:`unproject` handles both.

:func:`points_to_gaussians` is an approximate conversion, not a fit: one isotropic Gaussian
per point, standard deviation = half the pixel footprint at that depth (footprint = ray
distance / focal length, world units; neighbouring pixels' points lie about one footprint
apart, so half of it covers the surface without blurring it), identity rotation, opacity =
the rendered opacity, SH degree 0 with the DC term from the colour. View-dependent colour is
lost, and overlapping views' points are all kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldforge.fields.gaussians import GaussianModel, rgb_to_sh0
from fieldforge.scenes import Cameras
from fieldforge.scenes.rays import camera_rays


def unproject(cameras: Cameras, i: int, depth: Tensor, z_depth: bool) -> Tensor:
    """World points [H*W, 3] of camera ``i``'s pixels (row-major) at ``depth`` [H, W, 1]:
    camera-space z when ``z_depth``, else distance along the unit ray."""
    rays = camera_rays(cameras, i)
    d = rays.directions
    if z_depth:
        d = d / (d @ cameras.c2w[i, :3, 2])[:, None]
    return rays.origins + d * depth.reshape(-1, 1)


def pick_views(n: int, num_views: int | None) -> Tensor:
    """``num_views`` camera indices evenly spread over ``n`` (None or >= n: all)."""
    if num_views is None or num_views >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, num_views).round().long()


@torch.no_grad()
def render_points(method, cameras: Cameras, min_opacity: float = 0.5) -> dict[str, Tensor]:
    """Unprojected pixels of every camera: "xyz" [P, 3] world, "rgb" [P, 3] in [0, 1],
    "opacity" [P], "footprint" [P] (world size of one pixel at that depth)."""
    z_depth = method.depth_kind == "z"
    black = torch.zeros(3)
    parts: dict[str, list[Tensor]] = {"xyz": [], "rgb": [], "opacity": [], "footprint": []}
    for i in range(len(cameras)):
        cam = cameras[i].to("cpu")
        out = {k: v.cpu() for k, v in method.render(cam, black).items()}
        opacity = out["opacity"].reshape(-1)
        keep = opacity > min_opacity
        xyz = unproject(cam, 0, out["depth"], z_depth)[keep]
        focal = math.sqrt(float(cam.K[0, 0, 0] * cam.K[0, 1, 1]))
        parts["xyz"].append(xyz)
        parts["rgb"].append((out["rgb"].reshape(-1, 3)[keep] / opacity[keep, None]).clamp(0, 1))
        parts["opacity"].append(opacity[keep])
        parts["footprint"].append((xyz - cam.c2w[0, :3, 3]).norm(dim=-1) / focal)
    return {k: torch.cat(v) for k, v in parts.items()}


def subsample(points: dict[str, Tensor], max_points: int | None, seed: int = 0) -> dict[str, Tensor]:
    """A random subset of at most ``max_points`` points (None: all), seeded."""
    n = len(points["xyz"])
    if max_points is None or n <= max_points:
        return points
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points]
    return {k: v[idx] for k, v in points.items()}


def points_to_gaussians(points: dict[str, Tensor], scale: float = 0.5, max_opacity: float = 0.99) -> GaussianModel:
    """Approximate splat model of :func:`render_points` output (see the module docstring);
    standard deviation ``scale`` x footprint, opacity clamped to [1e-4, ``max_opacity``]."""
    n = len(points["xyz"])
    opacity = points["opacity"].clamp(1e-4, max_opacity)
    model = GaussianModel(n, sh_degree=0)
    model.set_params({
        "means": points["xyz"],
        "scales": torch.log((scale * points["footprint"]).clamp_min(1e-8))[:, None].expand(n, 3),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4),
        "opacities": torch.logit(opacity),
        "sh0": rgb_to_sh0(points["rgb"])[:, None, :],
        "shN": torch.zeros(n, 0, 3),
    })
    return model
