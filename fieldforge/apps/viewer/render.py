"""Viewer helpers without a server: viser camera <-> fieldforge Cameras, and render outputs
to displayable images.

viser cameras use OpenCV axes like fieldforge (x right, y down, z forward): ``wxyz`` is the
quaternion (scalar first) of R_world_camera, ``position`` the camera centre in world units,
``fov`` the *vertical* field of view in radians and ``aspect`` width / height. So a viser
camera is the camera-to-world matrix [R | position] with square pixels and the principal
point at the image centre.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import torch
from torch import Tensor
from viser import transforms as tf

from fieldforge.scenes.images import to_uint8
from fieldforge.scenes import Cameras

DEPTH_COLORMAP = "turbo"
SCALAR_COLORMAP = "viridis"


def viser_cameras(position, wxyz, fov: float, aspect: float, height: int, time: float | None = None) -> Cameras:
    """One fieldforge camera of ``height`` pixels (width = round(height * aspect)) seen from a
    viser camera pose (module docstring); ``time`` in [0, 1] for dynamic scenes."""
    height = max(1, int(height))
    width = max(1, round(height * aspect))
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = torch.from_numpy(tf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix())
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float64))
    f = 0.5 * height / math.tan(0.5 * fov)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    return Cameras(K=K[None], c2w=c2w[None].float(), width=torch.tensor([width]), height=torch.tensor([height]),
                   times=None if time is None else torch.tensor([float(time)]))


def viser_pose(cameras: Cameras, i: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """``(position [3], wxyz [4], vertical fov in radians)`` of camera ``i`` for viser."""
    c2w = cameras.c2w[i].double().numpy()
    wxyz = tf.SO3.from_matrix(c2w[:3, :3]).wxyz
    fov = 2.0 * math.atan(0.5 * float(cameras.height[i]) / float(cameras.K[i, 1, 1]))
    return c2w[:3, 3].copy(), wxyz, fov


def render_size(aspect: float, long_side: int, canvas_height: int) -> int:
    """Render height for a canvas of ``aspect`` (W / H): its long side is ``long_side`` pixels,
    never more than the canvas itself."""
    long_side = min(long_side, max(canvas_height, round(canvas_height * aspect)))
    return max(1, round(long_side / max(aspect, 1.0)))


def image_channels(out: dict[str, Tensor]) -> list[str]:
    """Names of the image outputs ([H, W, C] tensors sized like "rgb") of a render, "rgb" first."""
    shape = tuple(out["rgb"].shape[:2])
    names = [k for k, v in out.items() if isinstance(v, Tensor) and v.ndim == 3 and tuple(v.shape[:2]) == shape]
    return sorted(names, key=lambda k: (k != "rgb", k))


def colorize(x: Tensor, lo: float, hi: float, cmap: str) -> np.ndarray:
    """[H, W] values -> [H, W, 3] uint8 through a matplotlib colormap over [lo, hi]."""
    t = ((x.float() - lo) / max(hi - lo, 1e-12)).clamp(0, 1).nan_to_num(0.0)
    return matplotlib.colormaps[cmap](t.cpu().numpy(), bytes=True)[..., :3]


def display(out: dict[str, Tensor], channel: str) -> np.ndarray:
    """[H, W, 3] uint8 image of one render output.

    "rgb" and other 3-channel outputs are shown as colours (an output with negative values, such
    as normals in [-1, 1], as (x + 1) / 2); "opacity" is colour-mapped over [0, 1]; "depth" and
    other outputs (their first channel) over their 1st-99th percentile, taken where the opacity
    exceeds 0.5 when the render has one (background depth would squash the range).
    """
    x = out[channel].detach().float().cpu()
    if x.shape[-1] == 3:
        return to_uint8((x + 1) / 2 if bool((x < 0).any()) else x)
    x = x[..., 0]
    if channel == "opacity":
        return colorize(x, 0.0, 1.0, SCALAR_COLORMAP)
    valid = torch.isfinite(x)
    if "opacity" in out:
        valid &= out["opacity"][..., 0].detach().cpu() > 0.5
    vals = x[valid] if bool(valid.any()) else x[torch.isfinite(x)]
    if vals.numel() == 0:
        return np.zeros((*x.shape, 3), np.uint8)
    lo, hi = torch.quantile(vals, torch.tensor([0.01, 0.99])).tolist()
    return colorize(x, lo, hi, DEPTH_COLORMAP if channel == "depth" else SCALAR_COLORMAP)
