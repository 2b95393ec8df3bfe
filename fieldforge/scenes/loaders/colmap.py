"""COLMAP sparse reconstructions: ``sparse/0/`` (or ``sparse/``) with cameras, images and
points3D in .bin or .txt, and the photographs in ``images/`` (or ``images_K/`` when loading
with a downscale that is a multiple of K).

Cameras: COLMAP's world-to-camera poses become OpenCV camera-to-world; every camera model is
mapped onto "pinhole" / "opencv" / "opencv_fisheye" with its parameters kept (pinhole cameras
join a distorted model with zero distortion; a mix of opencv and fisheye, or models with
rational/FOV/thin-prism terms, raise DataError). Images are sorted by name; every 8th (0, 8,
...) is test. For ``images_K/`` the intrinsics are scaled per axis by the actual size ratio.

Bounds: the box of the seed points' central 98% per axis (1st-99th percentile); without
points, a cube around the cameras (1.1 x their largest distance from their mean). near/far
cover that box from every camera (see :func:`near_far_from_box`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fieldforge.errors import DataError
from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.images import read_images
from fieldforge.scenes.loaders import colmap_files as cf
from fieldforge.scenes.loaders.build import (bounds_from_cameras, bounds_from_points, finish, holdout_splits,
                                             image_folder, near_far_from_box, resolve)
from fieldforge.scenes.scene import Scene


def model_dir(root: Path) -> Path | None:
    """``sparse/0`` or ``sparse`` under ``root`` if it holds cameras.bin/.txt."""
    for d in (root / "sparse" / "0", root / "sparse"):
        if (d / "cameras.bin").is_file() or (d / "cameras.txt").is_file():
            return d
    return None


def detect(path: Path) -> bool:
    return path.is_dir() and model_dir(path) is not None


def to_cameras(cam_file: Path, cams: dict[int, cf.ColmapCamera], images: list[cf.ColmapImage],
               sizes: list[tuple[int, int]] | None = None) -> Cameras:
    """Cameras for ``images``; with ``sizes`` (w, h) of the images as read, intrinsics are
    scaled per axis from the COLMAP camera size to those sizes."""
    per_cam = {cid: cf.intrinsics(cam_file, cid, c) for cid, c in cams.items()}
    kinds = {per_cam[im.camera_id][2] for im in images} - {"pinhole"}
    if len(kinds) > 1:
        raise DataError(cam_file, f"images use both {' and '.join(sorted(kinds))} lens models; one per scene is supported")
    model = kinds.pop() if kinds else "pinhole"
    n = len(images)
    K = torch.zeros(n, 3, 3, dtype=torch.float64)
    dist = torch.zeros(n, 6, dtype=torch.float64)
    w, h = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for i, im in enumerate(images):
        (fx, fy, cx, cy), d, _ = per_cam[im.camera_id]
        cam = cams[im.camera_id]
        sx, sy = (1.0, 1.0) if sizes is None else (sizes[i][0] / cam.width, sizes[i][1] / cam.height)
        K[i] = torch.tensor([[fx * sx, 0, cx * sx], [0, fy * sy, cy * sy], [0, 0, 1]], dtype=torch.float64)
        dist[i] = torch.tensor(d, dtype=torch.float64)
        w[i], h[i] = (cam.width, cam.height) if sizes is None else sizes[i]
    return Cameras(K=K.float(), c2w=cf.camera_to_world(images).float(), width=w, height=h, model=model,
                   distortion=None if model == "pinhole" else dist.float())


def load(root: Path, downscale: int = 1) -> Scene:
    sparse = model_dir(root)
    if sparse is None:
        raise DataError(root / "sparse" / "0", "no COLMAP model (cameras.bin or cameras.txt) found")
    cam_file = cf.find_file(sparse, "cameras")
    img_file = cf.find_file(sparse, "images")
    cams = cf.read_cameras(cam_file)
    by_id = cf.read_images(img_file)
    if not by_id:
        raise DataError(img_file, "no registered images")
    missing = {im.camera_id for im in by_id.values()} - set(cams)
    if missing:
        raise DataError(img_file, f"images refer to cameras {sorted(missing)} missing from {cam_file.name}")
    images_meta = sorted(by_id.values(), key=lambda im: im.name)
    folder, m = image_folder(root, downscale)
    paths = [resolve(folder, im.name, img_file) for im in images_meta]
    images = read_images(paths)
    sizes = []
    for p, img, im in zip(paths, images, images_meta):
        cam = cams[im.camera_id]
        w, h = img.shape[1], img.shape[0]
        if abs(w - cam.width / m) >= 1 or abs(h - cam.height / m) >= 1:
            raise DataError(p, f"image is {w}x{h} but camera {im.camera_id} in {cam_file.name} is "
                               f"{cam.width}x{cam.height}" + (f" (expected 1/{m} of that in {folder.name})" if m > 1 else ""))
        sizes.append((w, h))
    cameras = to_cameras(cam_file, cams, images_meta, sizes)
    points = colors = None
    pts_file = next((sparse / f"points3D{e}" for e in (".bin", ".txt") if (sparse / f"points3D{e}").is_file()), None)
    if pts_file is not None:
        points, colors = cf.read_points(pts_file)
    bounds = bounds_from_points(points) if points is not None and len(points) else bounds_from_cameras(cameras.centers)
    near, far = near_far_from_box(cameras.centers, bounds)
    splits, protocol = holdout_splits(len(images))
    protocol.update(downscale=downscale, images=folder.name, bounds="central 98% of seed points" if points is not None and len(points)
                    else "cube around cameras")
    return finish(root, "colmap", cameras, images, [im.name for im in images_meta], splits, downscale // m,
                  bounds=bounds, near=near, far=far, image_paths=paths, points=points, point_colors=colors,
                  protocol=protocol, source=img_file)
