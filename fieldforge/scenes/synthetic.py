"""The bundled default scene: a procedural, analytically ray-traced multi-view dataset.

World frame: Z up, like the NeRF-synthetic scenes. A checker-textured sphere, a striped box
(turned about Z), a ringed cylinder and a checkered ground disc (a flat solid cylinder) all
lie inside ``BOUNDS`` = [-1.5, 1.5]^3. Shading is Lambertian from one directional light with
hard shadows and an ambient term; colours are linear in [0, 1] and view-independent.
Each pixel averages ``supersample``^2 rays (pixel centres at +0.5, sub-samples on a regular
grid), so alpha is the covered fraction and RGB is straight (not premultiplied) colour; pixels
that miss everything have RGBA = 0.

The dataset is written in Blender/NeRF-synthetic format: ``transforms_{train,val,test}.json``
with ``camera_angle_x`` (radians) and per-frame ``file_path`` (no extension) and OpenGL
camera-to-world ``transform_matrix``; RGBA PNGs under train/, val/, test/. Cameras sit at
radius 4 looking at the origin: train and val at seeded random positions on the upper
hemisphere (elevation 5-75 degrees), test on an orbit at 30 degrees elevation. Evaluate on a
white background with near 2 and far 6, as for Blender scenes.

    python -m fieldforge.scenes.synthetic OUT_DIR [--width 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from fieldforge.scenes.cameras import Cameras, opengl_to_opencv
from fieldforge.scenes.paths import look_at
from fieldforge.scenes.rays import pixel_rays

CAMERA_ANGLE_X = 0.6911112070083618  # the Blender lego field of view, radians
RADIUS = 4.0
NEAR, FAR = 2.0, 6.0
BOUNDS = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
LIGHT = (0.45, -0.35, 1.0)  # direction towards the light (normalised on use)
AMBIENT = 0.3
_EPS = 1e-9


def _vec(v) -> Tensor:
    return torch.tensor(v, dtype=torch.float64)


def _mix(mask: Tensor, colors: tuple) -> Tensor:
    """Colour [R, 3]: colors[0] where ``mask`` is False, colors[1] where True."""
    c0, c1 = _vec(colors[0]), _vec(colors[1])
    return torch.where(mask[:, None], c1, c0)


def _nearest_positive(*candidates: Tensor) -> Tensor:
    t = torch.stack(candidates, -1)
    t = torch.where(t > _EPS, t, torch.full_like(t, math.inf))
    return t.min(-1).values


@dataclass(frozen=True)
class Sphere:
    """Sphere with a longitude/latitude checker of ``cells`` x ``cells // 2`` squares."""

    center: tuple[float, float, float]
    radius: float
    colors: tuple
    cells: int = 8

    def intersect(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """First hit distance t [R] (inf: miss) along unit ``d`` and outward normal [R, 3]."""
        oc = o - _vec(self.center)
        b = (oc * d).sum(-1)
        c = (oc * oc).sum(-1) - self.radius**2
        disc = b * b - c
        root = torch.sqrt(disc.clamp_min(0))
        t = _nearest_positive(-b - root, -b + root)
        t = torch.where(disc >= 0, t, torch.full_like(t, math.inf))
        p = o + t.clamp_max(1e30)[:, None] * d
        return t, (p - _vec(self.center)) / self.radius

    def albedo(self, p: Tensor) -> Tensor:
        q = (p - _vec(self.center)) / self.radius
        lon = torch.atan2(q[:, 1], q[:, 0])
        lat = torch.asin(q[:, 2].clamp(-1, 1))
        step = 2 * math.pi / self.cells
        k = torch.floor(lon / step) + torch.floor(lat / step)
        return _mix(k.remainder(2) == 1, self.colors)


@dataclass(frozen=True)
class Box:
    """Box of half-sizes ``half`` turned by ``yaw`` radians about +Z, with diagonal stripes."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float
    colors: tuple
    period: float = 0.2

    def _rotation(self) -> Tensor:  # local -> world
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return _vec([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def intersect(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        R = self._rotation()
        ol, dl = (o - _vec(self.center)) @ R, d @ R
        dl = torch.where(dl.abs() < 1e-12, torch.full_like(dl, 1e-12), dl)
        half = _vec(self.half)
        t1, t2 = (-half - ol) / dl, (half - ol) / dl
        tmin, tmax = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_in, axis = tmin.max(-1)
        t_out = tmax.min(-1).values
        hit = (t_in <= t_out) & (t_out > _EPS)
        t = torch.where(hit, _nearest_positive(t_in, t_out), torch.full_like(t_in, math.inf))
        n_local = torch.zeros_like(ol)
        n_local.scatter_(1, axis[:, None], -torch.sign(dl.gather(1, axis[:, None])))
        return t, n_local @ R.T

    def albedo(self, p: Tensor) -> Tensor:
        q = (p - _vec(self.center)) @ self._rotation()
        return _mix(torch.floor(q.sum(-1) / self.period).remainder(2) == 1, self.colors)


@dataclass(frozen=True)
class Cylinder:
    """Solid cylinder along +Z (xy centre, radius, z range) with horizontal "rings" or an
    xy "checker" of square size ``period``."""

    center: tuple[float, float]
    radius: float
    z0: float
    z1: float
    colors: tuple
    pattern: str = "rings"
    period: float = 0.15

    def intersect(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        c = _vec(self.center)
        oxy, dxy = o[:, :2] - c, d[:, :2]
        a = (dxy * dxy).sum(-1).clamp_min(1e-18)
        b = (oxy * dxy).sum(-1)
        cc = (oxy * oxy).sum(-1) - self.radius**2
        disc = b * b - a * cc
        root = torch.sqrt(disc.clamp_min(0))
        inf = torch.full_like(b, math.inf)
        sides = []
        for ts in ((-b - root) / a, (-b + root) / a):
            z = o[:, 2] + ts * d[:, 2]
            sides.append(torch.where((disc >= 0) & (z >= self.z0) & (z <= self.z1), ts, inf))
        dz = torch.where(d[:, 2].abs() < 1e-12, torch.full_like(b, 1e-12), d[:, 2])
        caps = []
        for zc in (self.z0, self.z1):
            tc = (zc - o[:, 2]) / dz
            pxy = oxy + tc[:, None] * dxy
            caps.append(torch.where((pxy * pxy).sum(-1) <= self.radius**2, tc, inf))
        t = _nearest_positive(*sides, *caps)
        p = o + t.clamp_max(1e30)[:, None] * d
        on_cap = (t == caps[0]) | (t == caps[1])
        n_side = torch.cat([(p[:, :2] - c) / self.radius, torch.zeros_like(b)[:, None]], -1)
        n_cap = torch.zeros_like(p)
        n_cap[:, 2] = torch.where(t == caps[1], 1.0, -1.0)
        return t, torch.where(on_cap[:, None], n_cap, n_side)

    def albedo(self, p: Tensor) -> Tensor:
        q = p[:, :2] - _vec(self.center)
        if self.pattern == "checker":
            k = torch.floor(q[:, 0] / self.period) + torch.floor(q[:, 1] / self.period)
        else:
            k = torch.floor((p[:, 2] - self.z0) / self.period + 0.5)  # caps mid-band
        return _mix(k.remainder(2) == 1, self.colors)


GROUND = Cylinder(center=(0.0, 0.0), radius=1.3, z0=-0.6, z1=-0.5, pattern="checker", period=0.26,
                  colors=((0.82, 0.78, 0.68), (0.32, 0.30, 0.27)))
SPHERE = Sphere(center=(0.42, 0.38, -0.05), radius=0.45, colors=((0.95, 0.92, 0.85), (0.85, 0.2, 0.12)))
BOX = Box(center=(-0.45, -0.4, -0.2), half=(0.3, 0.3, 0.3), yaw=math.radians(30),
          colors=((0.95, 0.8, 0.2), (0.15, 0.35, 0.8)))
CYLINDER = Cylinder(center=(-0.4, 0.55), radius=0.2, z0=-0.5, z1=0.4,
                    colors=((0.92, 0.95, 0.9), (0.2, 0.62, 0.3)))
OBJECTS = (GROUND, SPHERE, BOX, CYLINDER)


def trace(origins: Tensor, directions: Tensor, objects: tuple = OBJECTS) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest hit of each ray [R, 3] (unit directions): distance t [R] (inf: miss),
    outward normal [R, 3] and object index [R] into ``objects`` (-1: miss). float64."""
    o, d = origins.double(), directions.double()
    t_best = torch.full(o.shape[:1], math.inf, dtype=torch.float64)
    normal = torch.zeros_like(o)
    index = torch.full(o.shape[:1], -1, dtype=torch.long)
    for k, obj in enumerate(objects):
        t, n = obj.intersect(o, d)
        closer = t < t_best
        t_best = torch.where(closer, t, t_best)
        normal = torch.where(closer[:, None], n, normal)
        index = torch.where(closer, k, index)
    return t_best, normal, index


def shade(origins: Tensor, directions: Tensor, objects: tuple = OBJECTS) -> tuple[Tensor, Tensor]:
    """Linear RGB [R, 3] (0 where missed) and hit mask [R] of rays, Lambertian with shadows."""
    t, n, idx = trace(origins, directions, objects)
    hit = idx >= 0
    p = origins.double() + t.clamp_max(1e30)[:, None] * directions.double()
    albedo = torch.zeros_like(p)
    for k, obj in enumerate(objects):
        sel = idx == k
        albedo[sel] = obj.albedo(p[sel])
    light = _vec(LIGHT) / _vec(LIGHT).norm()
    cos = (n @ light).clamp_min(0)
    t_shadow, _, _ = trace(p + 1e-6 * n, light.expand_as(p), objects)
    lit = torch.isinf(t_shadow).double()
    rgb = albedo * (AMBIENT + (1 - AMBIENT) * cos * lit)[:, None]
    return torch.where(hit[:, None], rgb, torch.zeros_like(rgb)), hit


def render_view(cameras: Cameras, i: int, supersample: int = 3) -> np.ndarray:
    """RGBA uint8 [H, W, 4] of camera ``i`` (straight alpha = covered fraction of the pixel)."""
    W, H = int(cameras.width[i]), int(cameras.height[i])
    s = supersample
    sub = (torch.arange(s, dtype=torch.float64) + 0.5) / s
    v = (torch.arange(H, dtype=torch.float64)[:, None] + sub).reshape(H, 1, s, 1).expand(H, W, s, s)
    u = (torch.arange(W, dtype=torch.float64)[:, None] + sub).reshape(1, W, 1, s).expand(H, W, s, s)
    cam = cameras[i]
    cam = Cameras(K=cam.K.double(), c2w=cam.c2w.double(), width=cam.width, height=cam.height)
    rays = pixel_rays(cam, torch.zeros(u.numel(), dtype=torch.long), u.reshape(-1), v.reshape(-1))
    rgb, hit = shade(rays.origins, rays.directions)
    cover = hit.double().reshape(H, W, s * s).mean(-1)
    rgb_sum = rgb.reshape(H, W, s * s, 3).sum(2)
    straight = rgb_sum / (cover * s * s).clamp_min(1)[..., None]
    rgba = torch.cat([straight, cover[..., None]], -1)
    return (rgba.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _hemisphere_eyes(n: int, gen: torch.Generator) -> Tensor:
    """``n`` camera centres at ``RADIUS``, uniform in area over elevations 5-75 degrees."""
    azimuth = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
    lo, hi = math.sin(math.radians(5)), math.sin(math.radians(75))
    z = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    r = torch.sqrt(1 - z * z)
    return RADIUS * torch.stack([r * torch.cos(azimuth), r * torch.sin(azimuth), z], -1)


def _orbit_eyes(n: int, elevation_deg: float = 30.0) -> Tensor:
    az = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    el = math.radians(elevation_deg)
    return RADIUS * torch.stack([math.cos(el) * torch.cos(az), math.cos(el) * torch.sin(az),
                                 torch.full_like(az, math.sin(el))], -1)


def split_cameras(width: int, eyes: Tensor) -> Cameras:
    """Square ``width`` px pinhole cameras (``CAMERA_ANGLE_X``) at ``eyes`` looking at the origin."""
    f = 0.5 * width / math.tan(0.5 * CAMERA_ANGLE_X)
    K = torch.tensor([[f, 0, width / 2], [0, f, width / 2], [0, 0, 1]], dtype=torch.float64)
    c2w = look_at(eyes, torch.zeros(3, dtype=torch.float64), _vec((0.0, 0.0, 1.0)))
    n = eyes.shape[0]
    return Cameras(K=K.expand(n, 3, 3).clone(), c2w=c2w, width=torch.full((n,), width),
                   height=torch.full((n,), width))


def generate(out_dir: str | Path, width: int = 100, n_train: int = 60, n_val: int = 10,
             n_test: int = 20, seed: int = 0, supersample: int = 3) -> Path:
    """Write the dataset to ``out_dir`` (created) and return it. Deterministic given ``seed``."""
    if width < 8 or min(n_train, n_val, n_test) < 1 or supersample < 1:
        raise ValueError("generate: need width >= 8, at least one view per split and supersample >= 1")
    out = Path(out_dir)
    gen = torch.Generator().manual_seed(seed)
    splits = {"train": _hemisphere_eyes(n_train, gen), "val": _hemisphere_eyes(n_val, gen),
              "test": _orbit_eyes(n_test)}
    for split, eyes in splits.items():
        cams = split_cameras(width, eyes)
        (out / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(len(cams)):
            iio.imwrite(out / split / f"r_{i}.png", render_view(cams, i, supersample))
            c2w_gl = opengl_to_opencv(cams.c2w[i])  # the axis flip is its own inverse
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w_gl.tolist()})
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m fieldforge.scenes.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--train", type=int, default=60)
    p.add_argument("--val", type=int, default=10)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    generate(a.out_dir, width=a.width, n_train=a.train, n_val=a.val, n_test=a.test, seed=a.seed)
    print(f"wrote {a.out_dir}")


if __name__ == "__main__":
    main()
