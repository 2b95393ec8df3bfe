"""Tiny-NeRF style single ``.npz``: ``images`` [N, H, W, 3|4] (uint8, or floats in [0, 1]),
``poses`` [N, 4, 4] OpenGL camera-to-world, ``focal`` (pixels, principal point at the image
centre); optional ``split`` (per-image "train"/"val"/"test") and ``file_path`` (names).

The path is the .npz file or a folder holding exactly one non-camera .npz. Protocol as for
NeRF-synthetic: bounds [-1.5, 1.5]^3, near 2, far 6, white background; without ``split``
every 8th image (0, 8, ...) is test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fieldforge.errors import DataError
from fieldforge.scenes.cameras import Cameras, opengl_to_opencv
from fieldforge.scenes.loaders.blender import BOUNDS, FAR, NEAR
from fieldforge.scenes.loaders.build import NPZ_ERRORS, finish, holdout_splits, matrices, number
from fieldforge.scenes.scene import Scene

REQUIRED = ("images", "poses", "focal")


def _file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix == ".npz" else None
    found = [p for p in path.glob("*.npz") if not p.name.startswith("cameras")]
    return found[0] if len(found) == 1 else None


def detect(path: Path) -> bool:
    f = _file(path)
    if f is None:
        return False
    try:
        with np.load(f, allow_pickle=False) as z:
            return all(k in z.files for k in REQUIRED)
    except NPZ_ERRORS:
        return False


def load(path: Path, downscale: int = 1) -> Scene:
    src = _file(path)
    if src is None:
        raise DataError(path, "no single .npz file found")
    try:
        with np.load(src, allow_pickle=False) as z:
            missing = [k for k in REQUIRED if k not in z.files]
            if missing:
                raise DataError(src, f"missing arrays {missing}")
            data = {k: z[k] for k in z.files}
    except NPZ_ERRORS as e:
        raise DataError(src, f"cannot read ({type(e).__name__}: {e})") from None
    imgs = data["images"]
    if imgs.ndim != 4 or imgs.shape[-1] not in (3, 4) or len(imgs) == 0:
        raise DataError(src, f"images must be N x H x W x 3|4, got {list(imgs.shape)}")
    if imgs.dtype != np.uint8:
        if not np.issubdtype(imgs.dtype, np.floating) or not np.isfinite(imgs).all():
            raise DataError(src, f"images must be uint8 or finite floats in [0, 1], got {imgs.dtype}")
        imgs = np.round(np.clip(imgs, 0, 1) * 255).astype(np.uint8)
    n, H, W = imgs.shape[:3]
    poses = matrices(src, data["poses"][:, :3, :4] if data["poses"].ndim == 3 else data["poses"], "poses", (3, 4))
    if len(poses) != n:
        raise DataError(src, f"{n} images but {len(poses)} poses")
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3] = poses
    f = number(src, data["focal"].reshape(-1)[0] if data["focal"].size == 1 else None, "focal", positive=True)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]).expand(n, 3, 3).clone()
    cams = Cameras(K=K.float(), c2w=opengl_to_opencv(c2w).float(), width=torch.full((n,), W), height=torch.full((n,), H))
    if "split" in data:
        labels = data["split"].astype(str)
        if labels.shape != (n,):
            raise DataError(src, f"split must have one label per image, got shape {list(labels.shape)}")
        splits = {s: torch.from_numpy(np.nonzero(labels == s)[0]) for s in dict.fromkeys(labels.tolist())}
        protocol = {"split": "from the npz 'split' array"}
    else:
        splits, protocol = holdout_splits(n)
    names = data["file_path"].astype(str).tolist() if "file_path" in data and len(data["file_path"]) == n \
        else [f"{i:04d}" for i in range(n)]
    protocol.update(near_far="2/6 (NeRF Blender)")
    images = list(torch.from_numpy(np.ascontiguousarray(imgs)).unbind(0))
    return finish(src.parent, "npz", cams, images, names, splits, downscale, bounds=torch.tensor(BOUNDS), near=NEAR,
                  far=FAR, image_paths=[src] * n, protocol=protocol, source=src)
