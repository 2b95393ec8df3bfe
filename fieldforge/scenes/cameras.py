"""Cameras: intrinsics, camera-to-world poses, sizes, lens distortion and per-frame time.

Conventions:
- ``c2w`` is camera-to-world, 4x4, in OpenCV axes (x right, y down, z forward), world units.
- ``K`` is the 3x3 pinhole matrix in pixels for the *stored* image size; the image's
  top-left corner is (0, 0) and pixel (i, j) has its centre at (i + 0.5, j + 0.5).
- ``distortion`` holds (k1, k2, k3, k4, p1, p2); zeros mean none. ``model`` selects how
  they are read: "pinhole", "opencv" (k1, k2, p1, p2, k3 in k3 slot),
  "opencv_fisheye" (k1..k4, equidistant).
- ``times`` is per-camera time in [0, 1] or None for static scenes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

MODELS = ("pinhole", "opencv", "opencv_fisheye")


@dataclass
class Cameras:
    K: Tensor  # [N, 3, 3] float32
    c2w: Tensor  # [N, 4, 4] float32, OpenCV axes
    width: Tensor  # [N] int64
    height: Tensor  # [N] int64
    model: str = "pinhole"
    distortion: Tensor | None = None  # [N, 6] (k1, k2, k3, k4, p1, p2)
    times: Tensor | None = None  # [N] in [0, 1]

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown camera model {self.model!r}; expected one of {MODELS}")
        n = self.K.shape[0]
        if self.c2w.shape != (n, 4, 4) or self.K.shape != (n, 3, 3):
            raise ValueError(f"Cameras: K {tuple(self.K.shape)} and c2w {tuple(self.c2w.shape)} disagree")
        self.width = torch.as_tensor(self.width, dtype=torch.long).reshape(n)
        self.height = torch.as_tensor(self.height, dtype=torch.long).reshape(n)

    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = [idx]
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Cameras(
            K=self.K[idx], c2w=self.c2w[idx], width=self.width[idx], height=self.height[idx],
            model=self.model,
            distortion=None if self.distortion is None else self.distortion[idx],
            times=None if self.times is None else self.times[idx],
        )

    @property
    def has_distortion(self) -> bool:
        return self.distortion is not None and bool((self.distortion != 0).any())

    @property
    def centers(self) -> Tensor:
        return self.c2w[:, :3, 3]

    def viewmats(self) -> Tensor:
        """World-to-camera 4x4 matrices (OpenCV axes), as gsplat's ``viewmats``."""
        return torch.linalg.inv(self.c2w)

    def scaled(self, factor: float) -> "Cameras":
        """Cameras for images resized by ``factor`` (0.5 halves the size); pixel-centre exact."""
        K = self.K.clone()
        K[:, :2, :] *= factor
        K[:, 2, 2] = 1.0
        w = torch.round(self.width.double() * factor).long()
        h = torch.round(self.height.double() * factor).long()
        return replace(self, K=K, width=w, height=h)

    def to(self, device) -> "Cameras":
        def mv(t):
            return None if t is None else t.to(device)
        return replace(self, K=self.K.to(device), c2w=self.c2w.to(device), width=self.width.to(device),
                       height=self.height.to(device), distortion=mv(self.distortion), times=mv(self.times))


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert camera-to-world matrices from OpenGL/Blender axes (y up, z back) to OpenCV."""
    out = c2w.clone()
    out[..., :3, 1:3] *= -1
    return out


def distort(xy: Tensor, dist: Tensor, model: str) -> Tensor:
    """Apply lens distortion to normalised image-plane points ``xy`` [..., 2] (x/z, y/z)."""
    if model == "pinhole":
        return xy
    k1, k2, k3, k4, p1, p2 = dist.unbind(-1)
    x, y = xy.unbind(-1)
    if model == "opencv":
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return torch.stack([x * radial + dx, y * radial + dy], -1)
    # opencv_fisheye (equidistant): r_d = theta * (1 + k1 th^2 + k2 th^4 + k3 th^6 + k4 th^8)
    r = torch.sqrt(x * x + y * y).clamp_min(1e-12)
    th = torch.atan(r)
    th2 = th * th
    thd = th * (1 + th2 * (k1 + th2 * (k2 + th2 * (k3 + th2 * k4))))
    s = thd / r
    return torch.stack([x * s, y * s], -1)


def undistort(xy_d: Tensor, dist: Tensor, model: str, iters: int = 20) -> Tensor:
    """Invert :func:`distort` by Newton iterations (vectorised; exact to ~1e-7 for sane lenses)."""
    if model == "pinhole":
        return xy_d
    xy = xy_d.clone()
    for _ in range(iters):
        xy = xy.detach().requires_grad_(True)
        with torch.enable_grad():
            f = distort(xy, dist, model) - xy_d
            gx = torch.autograd.grad(f[..., 0].sum(), xy, retain_graph=True)[0]
            gy = torch.autograd.grad(f[..., 1].sum(), xy)[0]
        a, b, c, d = gx[..., 0], gx[..., 1], gy[..., 0], gy[..., 1]
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        fx, fy = f.detach().unbind(-1)
        step = torch.stack([(d * fx - b * fy) / det, (-c * fx + a * fy) / det], -1)
        xy = xy.detach() - step
    return xy.detach()
