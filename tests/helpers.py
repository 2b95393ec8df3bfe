"""Small in-memory scenes for tests (no files, no shared data)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fieldforge.scenes import Cameras, Scene


def look_at_c2w(eye: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """OpenCV camera-to-world looking from ``eye`` at ``target`` (z forward, y down, world z up)."""
    target = torch.zeros(3) if target is None else target
    z = target - eye
    z = z / z.norm()
    up = torch.tensor([0.0, 0.0, 1.0])
    x = torch.linalg.cross(z, -up)
    if x.norm() < 1e-6:
        x = torch.tensor([1.0, 0.0, 0.0])
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def ring_cameras(n: int, size: int = 16, radius: float = 3.0, focal: float | None = None) -> Cameras:
    f = focal or size * 1.2
    c2w = []
    for i in range(n):
        a = 2 * math.pi * i / n
        c2w.append(look_at_c2w(torch.tensor([radius * math.cos(a), radius * math.sin(a), 0.8])))
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]).expand(n, 3, 3).clone()
    return Cameras(K=K, c2w=torch.stack(c2w), width=torch.full((n,), size), height=torch.full((n,), size))


def tiny_scene(n: int = 6, size: int = 12, seed: int = 0) -> Scene:
    g = torch.Generator().manual_seed(seed)
    cams = ring_cameras(n, size)
    images = [torch.randint(0, 256, (size, size, 4), generator=g, dtype=torch.uint8) for _ in range(n)]
    return Scene(cameras=cams, images=images, names=[f"img_{i}" for i in range(n)],
                 splits={"train": torch.arange(n), "test": torch.arange(n)},
                 bounds=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), near=0.5, far=6.0,
                 format="memory", source=Path("memory"))
