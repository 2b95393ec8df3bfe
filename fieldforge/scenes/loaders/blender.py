"""NeRF-synthetic (Blender) and D-NeRF scenes: ``transforms_{train,val,test}.json``.

Each file has ``camera_angle_x`` (horizontal field of view, radians) and ``frames`` with
``file_path`` (relative, usually without extension: ".png" is appended) and an OpenGL
camera-to-world ``transform_matrix``; D-NeRF frames also carry ``time`` in [0, 1] (all frames
or none). Focal f = 0.5 W / tan(0.5 camera_angle_x) for the image width W as read, principal
point at the image centre (W, H are the images' sizes, or optional top-level ``w``/``h``,
which must then match the images). Protocol: bounds [-1.5, 1.5]^3, near 2, far 6, white background.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from fieldforge.errors import DataError
from fieldforge.scenes.cameras import Cameras, opengl_to_opencv
from fieldforge.scenes.images import read_images
from fieldforge.scenes.loaders.build import finish, image_path, matrices, number, read_json, read_times
from fieldforge.scenes.scene import Scene

SPLITS = ("train", "val", "test")
BOUNDS = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
NEAR, FAR = 2.0, 6.0


def detect(path: Path) -> bool:
    return (path / "transforms_train.json").is_file()


def load(root: Path, downscale: int = 1) -> Scene:
    if not root.is_dir():
        raise DataError(root, "not a dataset folder")
    files = {s: root / f"transforms_{s}.json" for s in SPLITS if (root / f"transforms_{s}.json").is_file()}
    if "train" not in files:
        raise DataError(root / "transforms_train.json", "file not found")
    paths, c2w, angles, sizes, splits, times = [], [], [], [], {}, {}
    for split, file in files.items():
        meta = read_json(file)
        frames = meta.get("frames")
        if not isinstance(frames, list):
            raise DataError(file, "missing 'frames' list")
        if not frames:
            raise DataError(file, f"split {split!r} is empty (no frames)")
        if any(not isinstance(f, dict) or "file_path" not in f or "transform_matrix" not in f for f in frames):
            raise DataError(file, "every frame needs 'file_path' and 'transform_matrix'")
        angle = number(file, meta.get("camera_angle_x"), "camera_angle_x", positive=True)
        if angle >= math.pi:
            raise DataError(file, f"camera_angle_x must be below pi (a field of view in radians), got {angle}")
        start = len(paths)
        paths += [image_path(root, f["file_path"], file) for f in frames]
        c2w.append(matrices(file, [f["transform_matrix"] for f in frames], "transform_matrix"))
        angles += [angle] * len(frames)
        size = tuple(number(file, meta[k], k, positive=True) if k in meta else None for k in ("w", "h"))
        sizes += [size] * len(frames)
        times[file] = read_times(file, frames)
        splits[split] = torch.arange(start, len(paths))
    timed = [f for f, t in times.items() if t is not None]
    if timed and len(timed) != len(times):
        untimed = next(f for f, t in times.items() if t is None)
        raise DataError(untimed, f"frames have no 'time' but those of {timed[0].name} do (all or none must)")
    images = read_images(paths)
    w = torch.tensor([sw or img.shape[1] for (sw, _), img in zip(sizes, images)], dtype=torch.float64)
    h = torch.tensor([sh or img.shape[0] for (_, sh), img in zip(sizes, images)], dtype=torch.float64)
    f = 0.5 * w / torch.tan(0.5 * torch.tensor(angles, dtype=torch.float64))
    K = torch.zeros(len(paths), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, w / 2, h / 2, 1.0
    cams = Cameras(K=K.float(), c2w=opengl_to_opencv(torch.cat(c2w)).float(), width=w.long(), height=h.long(),
                   times=torch.cat(list(times.values())) if timed else None)
    base = Path(os.path.abspath(root))
    names = [str(p.relative_to(base).with_suffix("")) for p in paths]
    return finish(root, "blender", cams, images, names, splits, downscale, bounds=torch.tensor(BOUNDS),
                  near=NEAR, far=FAR, image_paths=paths,
                  protocol={"split": "transforms_{train,val,test}.json", "near_far": "2/6 (NeRF Blender)",
                            "background": "white"})
