"""Helpers (no tests): small synthetic Gaussian scenes and cameras for the splat tests, no data files."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldforge.fields.gaussians import GaussianModel
from fieldforge.render.rasterize import render_gaussians
from fieldforge.scenes import Cameras, Scene


def look_at_c2w(eye: Tensor, target: Tensor, up=(0.0, 0.0, 1.0)) -> Tensor:
    """OpenCV camera-to-world [4, 4]: z towards ``target``, y down (against ``up``)."""
    f = torch.nn.functional.normalize(target - eye, dim=0)
    r = torch.nn.functional.normalize(torch.linalg.cross(f, torch.tensor(up)), dim=0)
    d = torch.linalg.cross(f, r)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = r, d, f, eye
    return c2w


def orbit_cameras(n: int, size: int = 40, radius: float = 4.0, focal: float = 50.0) -> Cameras:
    c2w = []
    for k in range(n):
        a = 2 * math.pi * k / n
        eye = torch.tensor([radius * math.cos(a), radius * math.sin(a), 1.0 + 0.5 * math.sin(3 * a)])
        c2w.append(look_at_c2w(eye, torch.zeros(3)))
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]]).expand(n, 3, 3).clone()
    return Cameras(K=K, c2w=torch.stack(c2w), width=torch.full((n,), size), height=torch.full((n,), size))


def random_gaussians(n: int, seed: int = 0, spread: float = 1.0, scale: float = 0.15, sh_degree: int = 1) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    model = GaussianModel(n, sh_degree)
    with torch.no_grad():
        model.means.copy_((torch.rand(n, 3, generator=g) * 2 - 1) * spread)
        model.scales.copy_(torch.log(scale * (0.5 + torch.rand(n, 3, generator=g))))
        model.quats.copy_(torch.randn(n, 4, generator=g))
        model.opacities.copy_(torch.randn(n, generator=g) + 1.0)
        model.sh0.copy_(torch.randn(n, 1, 3, generator=g))
        model.shN.copy_(0.3 * torch.randn(model.shN.shape, generator=g))
    return model


def gaussian_scene(n_views: int = 8, size: int = 40, seed: int = 0) -> Scene:
    """A scene whose images are renders of random Gaussians on a white background."""
    cams = orbit_cameras(n_views, size)
    truth = random_gaussians(40, seed)
    images = []
    with torch.no_grad():
        for i in range(n_views):
            img, _, _ = render_gaussians(truth, torch.linalg.inv(cams.c2w[i])[None], cams.K[i][None], size, size,
                                     backgrounds=torch.ones(1, 3))
            images.append((img[0].clamp(0, 1) * 255).round().to(torch.uint8))
    return Scene(cameras=cams, images=images, names=[f"v{i}" for i in range(n_views)],
                 splits={"train": torch.arange(n_views)}, bounds=torch.tensor([[-1.2] * 3, [1.2] * 3]))
