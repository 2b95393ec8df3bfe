"""Rays from cameras.

A ray is x(s) = origin + s * direction with **unit** directions, so distances s, step sizes and
near/far are Euclidean world units. Pixel (i, j) (column i, row j) is sampled at
(i + pixel_offset, j + pixel_offset); the default 0.5 is the pixel centre (COLMAP, gsplat,
nerfacc); 0.0 reproduces the original NeRF/NeuS convention. Camera axes are OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fieldforge.scenes.cameras import Cameras, undistort


@dataclass
class Rays:
    origins: Tensor  # [R, 3]
    directions: Tensor  # [R, 3] unit length
    times: Tensor | None = None  # [R, 1] in [0, 1]

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, sl) -> "Rays":
        return Rays(self.origins[sl], self.directions[sl], None if self.times is None else self.times[sl])

    def to(self, device) -> "Rays":
        return Rays(self.origins.to(device), self.directions.to(device),
                    None if self.times is None else self.times.to(device))


def pixel_rays(cameras: Cameras, cam_idx: Tensor, u: Tensor, v: Tensor) -> Rays:
    """Rays through continuous pixel coordinates (u right, v down; centres at +0.5).

    ``cam_idx``, ``u`` and ``v`` are [R] tensors; each ray uses its own camera's intrinsics,
    distortion, pose and time.
    """
    K = cameras.K[cam_idx]
    x = (u - K[:, 0, 2]) / K[:, 0, 0]
    y = (v - K[:, 1, 2]) / K[:, 1, 1]
    xy = torch.stack([x, y], -1)
    if cameras.has_distortion:
        xy = undistort(xy, cameras.distortion[cam_idx], cameras.model)
    dirs_cam = torch.cat([xy, torch.ones_like(xy[:, :1])], -1)
    c2w = cameras.c2w[cam_idx]
    dirs = torch.einsum("rij,rj->ri", c2w[:, :3, :3], dirs_cam)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, :3, 3].expand_as(dirs)
    times = None if cameras.times is None else cameras.times[cam_idx].unsqueeze(-1)
    return Rays(origins.contiguous(), dirs, times)


def camera_rays(cameras: Cameras, i: int = 0, pixel_offset: float = 0.5) -> Rays:
    """All H*W rays of camera ``i`` in row-major order (row j, then column i)."""
    W, H = int(cameras.width[i]), int(cameras.height[i])
    dev = cameras.K.device
    jj, ii = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float32),
                            torch.arange(W, device=dev, dtype=torch.float32), indexing="ij")
    idx = torch.full((H * W,), i, dtype=torch.long, device=dev)
    return pixel_rays(cameras, idx, ii.reshape(-1) + pixel_offset, jj.reshape(-1) + pixel_offset)
