"""Helpers the format modules share: safe paths, JSON, poses, times, splits, bounds and the
final assembly of a :class:`Scene` (image/intrinsics size checks and downscaling).

Every problem with the files raises :class:`DataError` naming the offending file.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldforge.errors import DataError
from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.images import downscale_images, downscale_mask
from fieldforge.scenes.scene import Scene

#: what reading a damaged or truncated .npz raises (numpy, zipfile, zlib)
NPZ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
HOLDOUT = 8  # every 8th image (0, 8, 16, ...) is a test image when the data defines no split


def natural_key(s: str) -> list:
    """Sort key ordering "img2" before "img10" (instant-ngp's natural file order)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def resolve(root: Path, rel: str, source: Path) -> Path:
    """``root / rel``, refusing paths (relative or absolute) that lexically leave ``root``.

    The check is on the normalised path, so symlinks inside the dataset may point anywhere."""
    if not isinstance(rel, str) or not rel:
        raise DataError(source, f"bad file path {rel!r} (expected a non-empty string)")
    base = os.path.normpath(os.path.abspath(root))
    p = os.path.normpath(os.path.join(base, rel))
    if os.path.commonpath([base, p]) != base:
        raise DataError(source, f"file path {rel!r} escapes the dataset folder {root}")
    return Path(p)


def image_path(root: Path, rel, source: Path) -> Path:
    """A frame's image: ``rel`` inside ``root`` as given, else with ".png" appended (Blender)."""
    p = resolve(root, rel, source)
    return p if p.is_file() else p.with_name(p.name + ".png")


def image_folder(root: Path, downscale: int) -> tuple[Path, int]:
    """The image folder to read for ``downscale`` N: ``images_M`` for the largest M > 1 dividing
    N that exists, else ``images``; returns (folder, M). The caller applies the remaining N / M."""
    for m in range(downscale, 1, -1):
        if downscale % m == 0 and (root / f"images_{m}").is_dir():
            return root / f"images_{m}", m
    if (root / "images").is_dir():
        return root / "images", 1
    found = sorted(p.name for p in root.glob("images_*") if p.is_dir())
    hint = f" (found {', '.join(found)}: pass downscale as a multiple of their factor)" if found else ""
    raise DataError(root / "images", f"image folder not found for downscale {downscale}{hint}")


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; missing, malformed or non-object files raise DataError."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(path, "malformed JSON (expected an object at the top level)")
    return data


def number(source: Path, value, what: str, positive: bool = False) -> float:
    """A finite float (optionally > 0) from a JSON value, else DataError."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(source, f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x) or (positive and x <= 0):
        raise DataError(source, f"{what} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return x


def matrices(source: Path, values, what: str, shape: tuple[int, ...] = (4, 4)) -> Tensor:
    """Float64 tensor [N, *shape] from nested lists/arrays; wrong shapes or non-finite values raise."""
    try:
        m = torch.from_numpy(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError):
        raise DataError(source, f"{what}: not a numeric array") from None
    if m.ndim != len(shape) + 1 or m.shape[1:] != shape:
        raise DataError(source, f"{what}: expected shape [N, {', '.join(map(str, shape))}], got {list(m.shape)}")
    bad = ~torch.isfinite(m).flatten(1).all(1)
    if bad.any():
        raise DataError(source, f"{what}: non-finite values in entry {int(bad.nonzero()[0])}")
    return m


def read_times(source: Path, frames: Sequence[dict]) -> Tensor | None:
    """Per-frame ``time`` in [0, 1] (D-NeRF), None when no frame has one; all or none must."""
    has = [isinstance(f, dict) and "time" in f for f in frames]
    if not any(has):
        return None
    if not all(has):
        raise DataError(source, f"{has.count(False)} of {len(frames)} frames have no 'time' (all or none must)")
    t = torch.tensor([number(source, f["time"], "frame time") for f in frames], dtype=torch.float32)
    if ((t < 0) | (t > 1)).any():
        raise DataError(source, f"frame times must lie in [0, 1], got range [{t.min():.4g}, {t.max():.4g}]")
    return t


def holdout_splits(n: int) -> tuple[dict[str, Tensor], dict]:
    """NeRF's llffhold split: indices 0, 8, 16, ... are test, the rest train."""
    idx = torch.arange(n)
    test = idx % HOLDOUT == 0
    return {"train": idx[~test], "test": idx[test]}, {"split": f"every {HOLDOUT}th image (0, {HOLDOUT}, ...) is test"}


def bounds_from_points(points: Tensor) -> Tensor:
    """Box [2, 3] of the points' central 98% per axis (1st and 99th percentiles)."""
    q = torch.quantile(points.double()[:: max(1, len(points) // 200_000)], torch.tensor([0.01, 0.99], dtype=torch.float64), dim=0)
    return q.float()


def bounds_from_cameras(centers: Tensor) -> Tensor:
    """Cube [2, 3] centred on the cameras' mean, half-size 1.1 x their largest distance from it
    (the 3DGS scene-scale rule)."""
    c = centers.double()
    mid = c.mean(0)
    half = 1.1 * float((c - mid).norm(dim=-1).max())
    half = half if half > 0 else 1.0
    return torch.stack([mid - half, mid + half]).float()


def near_far_from_box(centers: Tensor, bounds: Tensor) -> tuple[float, float]:
    """Euclidean ray range that covers ``bounds`` from every camera: far = the largest
    camera-to-corner distance; near = the smallest camera-to-box distance, at least far/100."""
    c = centers.double()
    b = bounds.double()
    corners = torch.stack(torch.meshgrid(*[b[:, k] for k in range(3)], indexing="ij"), -1).reshape(-1, 3)
    far = float(torch.cdist(c, corners).max())
    gap = (torch.maximum(b[0] - c, c - b[1])).clamp_min(0).norm(dim=-1)
    return max(float(gap.min()), far / 100), far


def finish(
    root: Path,
    fmt: str,
    cameras: Cameras,
    images: list[Tensor],
    names: list[str],
    splits: dict[str, Tensor],
    downscale: int,
    bounds: Tensor,
    near: float,
    far: float,
    image_paths: Sequence[Path],
    masks: list[Tensor] | None = None,
    points: Tensor | None = None,
    point_colors: Tensor | None = None,
    protocol: dict | None = None,
    source: Path | None = None,
) -> Scene:
    """Check image sizes against the cameras, apply the remaining ``downscale`` to images, masks
    and intrinsics (pixel-corner exact; rows/columns past the last full block are dropped) and
    return the Scene. ``cameras`` must describe the images as read."""
    source = source or root
    for i, (img, p) in enumerate(zip(images, image_paths)):
        h, w = img.shape[:2]
        if (w, h) != (int(cameras.width[i]), int(cameras.height[i])):
            raise DataError(p, f"image is {w}x{h} but the intrinsics say {int(cameras.width[i])}x{int(cameras.height[i])}")
        if masks is not None and tuple(masks[i].shape) != (h, w):
            raise DataError(p, f"mask is {masks[i].shape[1]}x{masks[i].shape[0]} but the image is {w}x{h}")
    for name, idx in splits.items():
        if len(idx) == 0:
            raise DataError(source, f"split {name!r} is empty")
    if any(img.shape[-1] == 4 for img in images):  # one channel layout per scene
        images = [img if img.shape[-1] == 4 else torch.cat([img, torch.full_like(img[..., :1], 255)], -1) for img in images]
    if downscale > 1:
        small = min(min(img.shape[:2]) for img in images)
        if downscale > small:
            raise DataError(source, f"downscale {downscale} is larger than the smallest image side ({small} px)")
        images = downscale_images(images, downscale)
        masks = None if masks is None else [downscale_mask(m, downscale) for m in masks]
        cameras = replace(cameras.scaled(1.0 / downscale),
                          width=torch.tensor([img.shape[1] for img in images]),
                          height=torch.tensor([img.shape[0] for img in images]))
    protocol = {"format": fmt, "downscale": downscale, **(protocol or {})}
    return Scene(
        cameras=cameras, images=images, names=names, splits=splits, bounds=bounds.float(), near=float(near),
        far=float(far), masks=masks, points=points, point_colors=point_colors,
        background="white", format=fmt, source=root, protocol=protocol,
    )
