"""A 3D Gaussian splat .ply made by any trainer, as a scene to render along a path or to view.

``ply_scene(PLY)`` returns a method that renders the Gaussians (:class:`PlyMethod`) and a scene
holding cameras to build orbits and spirals from (and small renders of them as thumbnails):

- the ``cameras.json`` of the reference 3DGS trainer ("3D Gaussian Splatting for Real-Time
  Radiance Field Rendering", arXiv:2308.04079), looked for beside the .ply and up to two folders
  up (its layout is ``MODEL/point_cloud/iteration_N/point_cloud.ply`` beside
  ``MODEL/cameras.json``): a list of {"width", "height", "position" (camera centre),
  "rotation" (3 x 3 camera-to-world rotation, rows; OpenCV axes: x right, y down, z forward),
  "fx", "fy"} with the principal point at the image centre;
- otherwise a ring of :data:`RING` cameras (60 degrees vertical field of view, 512 x 512 px)
  around the opacity-weighted median of the Gaussians' means (per axis), at twice the
  90th-percentile distance of the means from it, 20 degrees above the plane normal to ``up``:
  the given up axis, else the means' axis of least spread (the ground of most captures spreads
  along the other two; its sign is ambiguous, so the printed note says how to choose).

The scene's bounds are the 2nd and 98th percentiles of the means per axis.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from fieldforge.apps.training.methods.base import Method
from fieldforge.errors import DataError, FieldforgeError
from fieldforge.fields.gaussians import GaussianModel
from fieldforge.fields.splat_ply import read
from fieldforge.render.rasterize import render_gaussians
from fieldforge.scenes import Cameras, Scene
from fieldforge.scenes.paths import look_at

RING = 36
RING_SIZE = 512
THUMBNAIL = 48  # long side of the renders stored as the scene's images


class PlyMethod(Method):
    """Renders a :class:`GaussianModel` read from a .ply (no training)."""

    name = "3dgs-ply"
    depth_kind = "z"

    def __init__(self, model: GaussianModel, device: torch.device):
        super().__init__(None, None, device)
        self.model = model.to(device)

    @property
    def gaussians(self) -> GaussianModel:
        return self.model

    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor) -> dict[str, Tensor]:
        cameras = cameras.to(self.device)
        w, h = int(cameras.width[0]), int(cameras.height[0])
        out, alpha, _ = render_gaussians(self.model, cameras.viewmats()[:1], cameras.K[:1], w, h, render_mode="RGB+ED",
                                          backgrounds=background.to(self.device).reshape(1, 3))
        return {"rgb": out[0, ..., :3].clamp(0, 1), "depth": out[0, ..., 3:], "opacity": alpha[0]}


def parse_up(text: str | None) -> Tensor | None:
    """``--up X,Y,Z`` -> a [3] tensor (None for None); FieldforgeError for anything else."""
    if text is None:
        return None
    try:
        up = torch.tensor([float(v) for v in text.split(",")], dtype=torch.float64)
    except ValueError:
        up = torch.zeros(0)
    if up.shape != (3,) or not torch.isfinite(up).all() or float(up.norm()) == 0:
        raise FieldforgeError(f"--up {text!r}: expected three numbers X,Y,Z, not all zero")
    return up


def find_cameras_json(ply: Path) -> Path | None:
    """The 3DGS trainer's ``cameras.json`` beside ``ply`` or up to two folders up, if any."""
    for folder in (ply.parent, *list(ply.parent.parents)[:2]):
        if (folder / "cameras.json").is_file():
            return folder / "cameras.json"
    return None


def read_cameras_json(path: Path) -> Cameras:
    """Cameras of a 3DGS ``cameras.json`` (see the module docstring); DataError names the problem."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"unreadable camera list ({e})") from None
    if not isinstance(entries, list) or not entries:
        raise DataError(path, "expected a non-empty JSON list of cameras")
    K, c2w, width, height = [], [], [], []
    for i, e in enumerate(entries):
        try:
            w, h, fx, fy = int(e["width"]), int(e["height"]), float(e["fx"]), float(e["fy"])
            pos = torch.tensor(e["position"], dtype=torch.float64)
            rot = torch.tensor(e["rotation"], dtype=torch.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(path, f"camera {i}: missing or malformed field ({err})") from None
        if w < 1 or h < 1 or not (fx > 0 and fy > 0) or pos.shape != (3,) or rot.shape != (3, 3) \
                or not (torch.isfinite(pos).all() and torch.isfinite(rot).all()):
            raise DataError(path, f"camera {i}: needs width, height >= 1, fx, fy > 0, a finite position [3] "
                                  "and rotation [3][3]")
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3], m[:3, 3] = rot, pos
        c2w.append(m)
        K.append(torch.tensor([[fx, 0, w / 2], [0, fy, h / 2], [0, 0, 1]], dtype=torch.float64))
        width.append(w)
        height.append(h)
    return Cameras(K=torch.stack(K).float(), c2w=torch.stack(c2w).float(), width=torch.tensor(width),
                   height=torch.tensor(height))


def weighted_median(values: Tensor, weights: Tensor) -> Tensor:
    """Per column of ``values`` [N, D], the smallest value whose cumulative weight reaches half."""
    order = values.argsort(0)
    cum = weights[order].cumsum(0)
    pick = (cum < 0.5 * cum[-1:]).sum(0).clamp_max(len(values) - 1)
    return values.gather(0, order.gather(0, pick[None]))[0]


def ring_cameras(means: Tensor, weights: Tensor | None = None, up: Tensor | None = None, n: int = RING,
                 size: int = RING_SIZE) -> Cameras:
    """``n`` cameras on a ring around the Gaussians (see the module docstring); ``weights`` [N]
    (default: equal) weigh the median, ``up`` [3] (default: the axis of least spread) the ring."""
    m = means.double()
    center = weighted_median(m, torch.ones(len(m), dtype=m.dtype) if weights is None else weights.double())
    radius = 2.0 * float(torch.quantile((m - center).norm(dim=-1), 0.9).clamp_min(1e-6))
    if up is None:
        up = torch.linalg.svd(m - center, full_matrices=False)[2][2]  # the least spread
    up = torch.as_tensor(up, dtype=m.dtype)
    up = up / up.norm()
    a = torch.linalg.cross(up, torch.eye(3, dtype=m.dtype)[int(up.abs().argmin())])
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    elev = math.radians(20.0)
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    eyes = center + radius * (math.cos(elev) * (torch.cos(angles)[:, None] * a + torch.sin(angles)[:, None] * b)
                              + math.sin(elev) * up)
    c2w = look_at(eyes, center.expand(n, 3), up)
    f = size / (2 * math.tan(math.radians(30.0)))
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float64).expand(n, 3, 3)
    return Cameras(K=K.float().clone(), c2w=c2w.float(), width=torch.full((n,), size), height=torch.full((n,), size))


def ply_scene(ply: str | Path, device: torch.device, up: Tensor | None = None) -> tuple[PlyMethod, Scene, str]:
    """(renderer, scene with cameras and thumbnails, a note on where the cameras came from); ``up``
    sets the ring's up axis when there is no cameras.json."""
    ply = Path(ply)
    model = read(ply)
    if len(model) == 0:
        raise DataError(ply, "no Gaussians (0 vertices): nothing to render")
    means = model.means.detach()
    found = find_cameras_json(ply)
    if found is not None:
        cameras, note = read_cameras_json(found), f"cameras from {found}"
    else:
        cameras = ring_cameras(means, torch.sigmoid(model.opacities.detach()), up)
        note = f"{ply}: no cameras.json found; a ring of cameras around the Gaussians, " + (
            f"up = {[round(float(v), 3) for v in up]}" if up is not None else
            "up = their axis of least spread (choose it with --up X,Y,Z)")
    method = PlyMethod(model, device).eval()
    thumbs = []
    for i in range(len(cameras)):
        w, h = int(cameras.width[i]), int(cameras.height[i])
        s = THUMBNAIL / max(w, h)
        small = Cameras(K=cameras.K[i:i + 1] * torch.tensor([[s], [s], [1.0]]), c2w=cameras.c2w[i:i + 1],
                        width=torch.tensor([max(1, round(w * s))]), height=torch.tensor([max(1, round(h * s))]))
        rgb = method.render(small, torch.ones(3))["rgb"].cpu()
        thumbs.append((rgb * 255).round().to(torch.uint8))
    lo, hi = torch.quantile(means.float(), torch.tensor([0.02, 0.98]), dim=0)
    scene = Scene(cameras=cameras, images=thumbs, names=[f"view_{i}" for i in range(len(cameras))],
                  splits={"train": torch.arange(len(cameras))}, bounds=torch.stack([lo, hi]),
                  format="3dgs-ply", source=ply)
    return method, scene, note


def load_renderable(target: Path, device: str = "auto", up: Tensor | None = None) -> tuple[Method, Scene]:
    """A run folder, or a 3DGS ``.ply`` (:func:`ply_scene`, its note printed), as the method that
    renders it and the scene of its cameras."""
    from fieldforge.apps.training.run import load_run, resolve_device

    if target.suffix.lower() != ".ply":
        method, _, scene = load_run(target, device)
        return method, scene
    if not target.is_file():
        raise FieldforgeError(f"{target}: file not found")
    method, scene, note = ply_scene(target, resolve_device(device), up)
    print(note)
    return method, scene
