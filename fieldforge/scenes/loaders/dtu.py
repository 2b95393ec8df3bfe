"""DTU in IDR / NeuS / MonoSDF layout: ``cameras.npz`` (or NeuS's ``cameras_sphere.npz``) with
``world_mat_i`` (projection K[R|t] in rows 0-2) and ``scale_mat_i`` (unit sphere -> object),
images ``image/*.png`` (IDR, NeuS; masks in ``mask/``) or ``*_rgb.png`` (MonoSDF).

P = (world_mat @ scale_mat)[:3] is split by an RQ decomposition into K (positive diagonal,
normalised by K[2, 2]) and the world-to-camera rotation R; the camera centre is the null
vector of P. Cameras are in the normalised (unit-sphere) frame, OpenCV axes.

Crops: when the principal point lies outside the images and they are square S x S, the
images are MonoSDF's DTU crops of the 1600 x 1200 originals (centre 1200 x 1200, resized to
S): cx -= 200, then K rows 0-1 *= S / 1200 (MonoSDF ``center_crop_for_dtu``).
Protocol: bounds [-1, 1]^3 (the unit sphere's box); near/far = min |C| - 1, max |C| + 1;
every 8th view (0, 8, ...) is test and split "all" has every view (surface reconstruction).
NeuS and IDR cast rays through integer pixel coordinates (pixel_offset 0.0).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from fieldforge.errors import DataError
from fieldforge.scenes.cameras import Cameras
from fieldforge.scenes.images import read_images, read_masks
from fieldforge.scenes.loaders.build import NPZ_ERRORS, finish, holdout_splits, matrices
from fieldforge.scenes.scene import Scene

CAMERA_FILES = ("cameras.npz", "cameras_sphere.npz")
DTU_SIZE = (1600, 1200)  # width, height of the original DTU images the world_mats describe


def detect(path: Path) -> bool:
    return any((path / f).is_file() for f in CAMERA_FILES)


def decompose(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K (K[2, 2] = 1, positive diagonal), world-to-camera R (det +1) and centre C of a 3x4 P."""
    M = P[:, :3]
    if np.linalg.det(M) < 0:  # P is defined up to scale: pick the sign giving det(R) = +1
        P, M = -P, -M
    K, R = scipy.linalg.rq(M)
    D = np.diag(np.sign(np.diag(K)))
    K, R = K @ D, D @ R
    C = -np.linalg.solve(M, P[:, 3])
    return K / K[2, 2], R, C


def _image_files(root: Path) -> tuple[list[Path], list[Path] | None, str]:
    mono = sorted(root.glob("*_rgb.png"), key=lambda p: p.name)
    if mono:
        return mono, None, "monosdf"
    if (root / "image").is_dir():
        imgs = sorted((root / "image").glob("*.png"), key=lambda p: p.name)
        masks = sorted((root / "mask").glob("*.png"), key=lambda p: p.name) if (root / "mask").is_dir() else None
        return imgs, masks, "idr"
    raise DataError(root / "image", "no images found (expected image/*.png or *_rgb.png)")


def load(root: Path, downscale: int = 1) -> Scene:
    src = next(root / f for f in CAMERA_FILES if (root / f).is_file())
    try:
        with np.load(src, allow_pickle=False) as npz:
            mats = {k: npz[k] for k in npz.files}
    except NPZ_ERRORS as e:
        raise DataError(src, f"cannot read ({type(e).__name__}: {e})") from None
    ids = sorted(int(m.group(1)) for k in mats if (m := re.fullmatch(r"world_mat_(\d+)", k)))
    if not ids:
        raise DataError(src, "no world_mat_i entries")
    if ids != list(range(len(ids))):
        raise DataError(src, f"world_mat indices must be 0..{len(ids) - 1}")
    world = matrices(src, [mats[f"world_mat_{i}"] for i in ids], "world_mat").numpy()
    scale = matrices(src, [mats.get(f"scale_mat_{i}", np.eye(4)) for i in ids], "scale_mat").numpy()
    paths, mask_paths, layout = _image_files(root)
    if len(paths) != len(ids):
        raise DataError(paths[0].parent if paths else root, f"has {len(paths)} images but {src.name} has {len(ids)} cameras")
    if mask_paths is not None and len(mask_paths) != len(ids):
        raise DataError(root / "mask", f"has {len(mask_paths)} masks but {src.name} has {len(ids)} cameras")
    images = read_images(paths)
    n = len(ids)
    K = np.zeros((n, 3, 3))
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):  # one 3x3 RQ per camera
        P = (world[i] @ scale[i])[:3]
        if np.linalg.matrix_rank(P[:, :3]) < 3:
            raise DataError(src, f"world_mat_{i} @ scale_mat_{i}: singular projection matrix (not a camera)")
        K[i], R, C = decompose(P)
        c2w[i, :3, :3], c2w[i, :3, 3] = R.T, C
    if not (np.isfinite(K).all() and np.isfinite(c2w).all()):
        raise DataError(src, "degenerate projection matrix (non-finite decomposition)")
    w = np.array([img.shape[1] for img in images], dtype=np.float64)
    h = np.array([img.shape[0] for img in images], dtype=np.float64)
    inside = (K[:, 0, 2] > 0) & (K[:, 0, 2] < w) & (K[:, 1, 2] > 0) & (K[:, 1, 2] < h)
    crop = None
    if not inside.all():
        side = min(DTU_SIZE)
        if not (w == h).all():
            raise DataError(paths[int(np.argmin(inside))], f"principal point ({K[~inside][0, 0, 2]:.1f}, "
                            f"{K[~inside][0, 1, 2]:.1f}) lies outside the {int(w[0])}x{int(h[0])} image")
        K[:, 0, 2] -= (DTU_SIZE[0] - side) / 2
        K[:, :2] *= (w / side)[:, None, None]
        crop = f"MonoSDF DTU crop: cx -= {(DTU_SIZE[0] - side) / 2:g}, K[:2] *= {int(w[0])}/{side}"
    cams = Cameras(K=torch.from_numpy(K).float(), c2w=torch.from_numpy(c2w).float(),
                   width=torch.from_numpy(w).long(), height=torch.from_numpy(h).long())
    masks = read_masks(mask_paths) if mask_paths is not None else None
    radius = cams.centers.double().norm(dim=-1)
    splits, protocol = holdout_splits(n)
    splits["all"] = torch.arange(n)
    protocol.update(layout=layout, bounds="unit sphere box [-1, 1]^3", pixel_offset_reference=0.0)
    if crop:
        protocol["crop"] = crop
    return finish(root, "dtu", cams, images, [p.stem for p in paths], splits, downscale,
                  bounds=torch.tensor([[-1.0] * 3, [1.0] * 3]), near=max(float(radius.min()) - 1, 0.01),
                  far=float(radius.max()) + 1, image_paths=paths, masks=masks, protocol=protocol, source=src)
