"""instant-ngp and nerfstudio scenes: one ``transforms.json``.

Intrinsics (top level, each overridable per frame): ``fl_x``/``fl_y`` (pixels), or
``camera_angle_x``/``camera_angle_y`` (radians), or ``x_fov``/``y_fov`` (degrees) - with one
axis given the other uses the same focal length; ``cx``/``cy`` (default: image centre);
``w``/``h`` (checked against the images; default: the image size); distortion ``k1..k4``,
``p1``, ``p2`` with ``camera_model`` OPENCV (k1, k2, k3, p1, p2) or OPENCV_FISHEYE (k1..k4),
or instant-ngp's ``is_fisheye``. Frames carry ``file_path``, an OpenGL camera-to-world
``transform_matrix``, optional ``mask_path`` and ``time`` (all frames or none). Frames are
sorted by natural order of ``file_path`` (as instant-ngp does). Splits: nerfstudio's
``train_filenames``/``val_filenames``/``test_filenames`` when given, else every 8th frame
(0, 8, ...) is test. ``ply_file_path`` gives seed points (with colours if present).

Bounds: an explicit ``aabb`` [[min], [max]]; else ``aabb_scale`` a as instant-ngp places it
(the ngp cube 0.5 +- a/2 mapped back through ``scale`` (0.33) and ``offset`` (0.5, 0.5, 0.5):
(0.5 +- a/2 - offset) / scale); else the seed points' central 98%; else a cube around the
cameras. near/far cover the bounds from every camera.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fieldforge.errors import DataError
from fieldforge.scenes.cameras import Cameras, opengl_to_opencv
from fieldforge.scenes.images import read_images, read_masks
from fieldforge.scenes.loaders.build import (bounds_from_cameras, bounds_from_points, finish, holdout_splits,
                                             image_path, matrices, natural_key, near_far_from_box, number,
                                             read_json, read_times, resolve)
from fieldforge.scenes.scene import Scene

DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
MODELS = {"OPENCV": "opencv", "OPENCV_FISHEYE": "opencv_fisheye", "PINHOLE": "pinhole", "SIMPLE_PINHOLE": "pinhole"}


def detect(path: Path) -> bool:
    return (path / "transforms.json").is_file()


def _intrinsics(src: Path, meta: dict, frame: dict, w_img: int, h_img: int):
    """(fx, fy, cx, cy, w, h, distortion[6], model) of one frame, frame keys overriding meta."""
    def get(key, default=None):
        return frame.get(key, meta.get(key, default))

    def num(key, default=None, positive=False):
        v = get(key)
        return default if v is None else number(src, v, key, positive)

    def angle(key, half_turn):  # a field of view in (0, half_turn): pi radians or 180 degrees
        v = num(key, positive=True)
        if v >= half_turn:
            raise DataError(src, f"{key} must be below {half_turn:g} (a field of view), got {v}")
        return v

    w, h = num("w", w_img, True), num("h", h_img, True)
    fx = num("fl_x", positive=True)
    fy = num("fl_y", positive=True)
    if fx is None and get("camera_angle_x") is not None:
        fx = 0.5 * w / math.tan(0.5 * angle("camera_angle_x", math.pi))
    if fy is None and get("camera_angle_y") is not None:
        fy = 0.5 * h / math.tan(0.5 * angle("camera_angle_y", math.pi))
    if fx is None and get("x_fov") is not None:
        fx = 0.5 * w / math.tan(0.5 * math.radians(angle("x_fov", 180.0)))
    if fy is None and get("y_fov") is not None:
        fy = 0.5 * h / math.tan(0.5 * math.radians(angle("y_fov", 180.0)))
    if fx is None and fy is None:
        raise DataError(src, f"frame {frame.get('file_path')!r}: no focal length (fl_x/fl_y, camera_angle_x/y or x_fov/y_fov)")
    fx, fy = fx or fy, fy or fx
    dist = [num(k, 0.0) for k in DIST_KEYS]
    name = get("camera_model")
    if name is None:
        model = "opencv_fisheye" if get("is_fisheye", False) else ("opencv" if any(dist) else "pinhole")
    elif isinstance(name, str) and name in MODELS:
        model = MODELS[name]
    else:
        raise DataError(src, f"unsupported camera_model {name!r} (supported: {', '.join(MODELS)})")
    unused = {"pinhole": DIST_KEYS, "opencv": ("k4",), "opencv_fisheye": ("p1", "p2")}[model]
    bad = [k for k, v in zip(DIST_KEYS, dist) if k in unused and v != 0]
    if bad:
        raise DataError(src, f"frame {frame.get('file_path')!r}: {', '.join(bad)} not supported by the {model} lens model")
    return fx, fy, num("cx", w / 2), num("cy", h / 2), w, h, dist, model


def _read_ply(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float32)
        names = v.data.dtype.names
        rgb = np.stack([v[c] for c in ("red", "green", "blue")], -1).astype(np.uint8) if "red" in names else None
    except Exception as e:  # plyfile raises several types on malformed files
        raise DataError(path, f"cannot read PLY point cloud ({type(e).__name__}: {e})") from None
    if not np.isfinite(xyz).all():
        raise DataError(path, "non-finite point coordinates")
    return torch.from_numpy(xyz), None if rgb is None else torch.from_numpy(rgb)


def _bounds(src: Path, meta: dict, points, centers) -> tuple[torch.Tensor, str]:
    if "aabb" in meta:
        b = matrices(src, [meta["aabb"]], "aabb", (2, 3))[0]
        if not (b[1] > b[0]).all():
            raise DataError(src, "aabb: max must exceed min on every axis")
        return b.float(), "aabb"
    if "aabb_scale" in meta:
        a = number(src, meta["aabb_scale"], "aabb_scale", positive=True)
        scale = number(src, meta.get("scale", 0.33), "scale", positive=True)
        offset = torch.as_tensor(meta.get("offset", [0.5, 0.5, 0.5]), dtype=torch.float64)
        if offset.shape != (3,) or not torch.isfinite(offset).all():
            raise DataError(src, "offset must be 3 finite numbers")
        return torch.stack([(0.5 - a / 2 - offset) / scale, (0.5 + a / 2 - offset) / scale]).float(), "aabb_scale"
    if points is not None and len(points):
        return bounds_from_points(points), "central 98% of seed points"
    return bounds_from_cameras(centers), "cube around cameras"


def load(root: Path, downscale: int = 1) -> Scene:
    src = root / "transforms.json"
    meta = read_json(src)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(src, "missing or empty 'frames' list")
    if any(not isinstance(f, dict) or "file_path" not in f or "transform_matrix" not in f for f in frames):
        raise DataError(src, "every frame needs 'file_path' and 'transform_matrix'")
    if any(not isinstance(f["file_path"], str) for f in frames):
        raise DataError(src, "every frame's 'file_path' must be a string")
    frames = sorted(frames, key=lambda f: natural_key(f["file_path"]))
    paths = [image_path(root, f["file_path"], src) for f in frames]
    c2w = matrices(src, [f["transform_matrix"] for f in frames], "transform_matrix")
    times = read_times(src, frames)
    images = read_images(paths)
    intr = [_intrinsics(src, meta, f, img.shape[1], img.shape[0]) for f, img in zip(frames, images)]
    models = {m for *_, m in intr} - {"pinhole"}
    if len(models) > 1:
        raise DataError(src, "frames mix opencv and opencv_fisheye lens models; one per scene is supported")
    model = models.pop() if models else "pinhole"
    fx, fy, cx, cy, w, h = (torch.tensor([v[k] for v in intr], dtype=torch.float64) for k in range(6))
    K = torch.zeros(len(frames), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
    if (w != w.round()).any() or (h != h.round()).any():
        raise DataError(src, "w and h must be whole numbers of pixels")
    cams = Cameras(K=K.float(), c2w=opengl_to_opencv(c2w).float(), width=w.long(), height=h.long(), model=model,
                   distortion=None if model == "pinhole" else torch.tensor([v[6] for v in intr]).float(), times=times)
    has_mask = ["mask_path" in f for f in frames]
    if any(has_mask) and not all(has_mask):
        raise DataError(src, "some frames have 'mask_path' and others not (all or none must)")
    masks = read_masks([resolve(root, f["mask_path"], src) for f in frames]) if all(has_mask) else None
    points = colors = None
    if meta.get("ply_file_path"):
        points, colors = _read_ply(resolve(root, meta["ply_file_path"], src))
    names = [f["file_path"] for f in frames]
    bounds, rule = _bounds(src, meta, points, cams.centers)
    near, far = near_far_from_box(cams.centers, bounds)
    listed = {s: meta[f"{s}_filenames"] for s in ("train", "val", "test") if f"{s}_filenames" in meta}
    if listed:
        index = {str(p): i for i, p in enumerate(paths)}
        splits = {}
        for s, files in listed.items():
            if not isinstance(files, list):
                raise DataError(src, f"{s}_filenames must be a list")
            idx = [index.get(str(image_path(root, f, src))) for f in files]
            if None in idx:
                raise DataError(src, f"{s}_filenames lists {files[idx.index(None)]!r}, which is not a frame")
            splits[s] = torch.tensor(idx, dtype=torch.long)
        protocol = {"split": "from transforms.json *_filenames"}
    else:
        splits, protocol = holdout_splits(len(frames))
    protocol["bounds"] = rule
    return finish(root, "nerfstudio", cams, images, names, splits, downscale, bounds=bounds, near=near, far=far,
                  image_paths=paths, masks=masks, points=points, point_colors=colors, protocol=protocol, source=src)
