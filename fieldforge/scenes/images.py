"""Reading and area-downscaling images and masks for the loaders.

Images are returned as uint8 tensors [H, W, C] with C = 3 (RGB) or 4 (RGBA, straight alpha),
row 0 at the top. Grey images become RGB, grey+alpha becomes RGBA and 16-bit images are
rounded to 8 bits. Masks are bool [H, W], True = use the pixel (any channel > 127 of the file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fieldforge.errors import DataError


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        return np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as e:  # imageio raises many types for unreadable files
        raise DataError(path, f"cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _to_uint8(path: Path, a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return np.round(a.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    raise DataError(path, f"unsupported image sample type {a.dtype} (expected 8 or 16 bit)")


def read_image(path: str | Path) -> Tensor:
    """One image as uint8 [H, W, 3|4]; raises :class:`DataError` naming the file if unreadable."""
    path = Path(path)
    a = _to_uint8(path, _read_array(path))
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise DataError(path, f"unsupported image layout {a.shape} (expected H x W x 1..4)")
    if a.shape[-1] <= 2:  # grey (+ alpha) -> RGB(A)
        a = np.concatenate([a[..., :1].repeat(3, -1), a[..., 1:]], -1)
    return torch.from_numpy(np.ascontiguousarray(a))


def read_mask(path: str | Path) -> Tensor:
    """A mask image as bool [H, W]: True where any channel is > 127."""
    path = Path(path)
    a = _to_uint8(path, _read_array(path))
    if a.ndim == 3:
        a = a.max(-1)
    if a.ndim != 2:
        raise DataError(path, f"unsupported mask layout {a.shape}")
    return torch.from_numpy(a > 127)


def _parallel(fn, paths: Sequence[Path], workers: int | None) -> list:
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    if len(paths) < 4 or workers <= 1:
        return [fn(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:  # PNG/JPEG decoding releases the GIL
        return list(pool.map(fn, paths))


def read_images(paths: Sequence[str | Path], workers: int | None = None) -> list[Tensor]:
    """Read many images concurrently (threads); same layout rules as :func:`read_image`."""
    return _parallel(read_image, [Path(p) for p in paths], workers)


def read_masks(paths: Sequence[str | Path], workers: int | None = None) -> list[Tensor]:
    """Read many masks concurrently; see :func:`read_mask`."""
    return _parallel(read_mask, [Path(p) for p in paths], workers)


def _pool(x: Tensor, factor: int) -> Tensor:
    """Mean over factor x factor blocks of [H, W, C] float (H, W multiples of factor)."""
    return F.avg_pool2d(x.permute(2, 0, 1)[None], factor)[0].permute(1, 2, 0)


def downscale_image(img: Tensor, factor: int) -> Tensor:
    """Area-average an image by an integer ``factor`` (box filter over factor x factor blocks).

    Rows/columns beyond the last full block are dropped (so width becomes W // factor, and
    pixel-corner coordinates scale exactly by 1/factor). RGBA is averaged in premultiplied
    alpha, so compositing the result on any background equals averaging the composites.
    """
    if factor == 1:
        return img
    H, W = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    if H == 0 or W == 0:
        raise ValueError(f"cannot downscale a {img.shape[1]}x{img.shape[0]} image by {factor}")
    x = img[:H, :W].float() / 255.0
    if x.shape[-1] == 4:
        a = x[..., 3:]
        pooled = _pool(torch.cat([x[..., :3] * a, a], -1), factor)
        a = pooled[..., 3:]
        rgb = torch.where(a > 0, pooled[..., :3] / a.clamp_min(1e-12), torch.zeros_like(pooled[..., :3]))
        x = torch.cat([rgb.clamp(0, 1), a], -1)
    else:
        x = _pool(x, factor)
    return torch.round(x * 255.0).to(torch.uint8)


def downscale_mask(mask: Tensor, factor: int) -> Tensor:
    """Downscale a bool mask by ``factor``: a block is kept when more than half of it is True."""
    if factor == 1:
        return mask
    H, W = mask.shape[0] // factor * factor, mask.shape[1] // factor * factor
    return _pool(mask[:H, :W, None].float(), factor)[..., 0] > 0.5
