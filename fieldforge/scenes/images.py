"""Reading and area-downscaling images and masks for the loaders; 8-bit frames for writing
(:func:`to_uint8`).

Images are returned as uint8 tensors [H, W, C] with C = 3 (RGB) or 4 (RGBA, straight alpha),
row 0 at the top, as displayed: the EXIF orientation of a photograph is applied. Grey images
become RGB, grey+alpha becomes RGBA, palette images RGB (RGBA when the palette has
transparency), CMYK and other colour spaces are converted to RGB, and 16-bit images are rounded
to 8 bits. An image of more than :data:`fieldforge.limits.MAX_PIXELS` pixels is refused from
its header, before it is decoded. Masks are bool [H, W], True = use the pixel (any channel > 127
of the file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from fieldforge.errors import DataError
from fieldforge.limits import MAX_PIXELS, check_memory


_KEPT_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "1")


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise DataError(path, f"image of {width}x{height} pixels is larger than the limit of {MAX_PIXELS:,} "
                                      f"pixels (downscale the images first)")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            elif im.mode not in _KEPT_MODES and not im.mode.startswith(("I", "F")):
                im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
            return np.array(im)  # a writable copy
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types for unreadable files
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


def _parallel(fn, items: Sequence, workers: int | None) -> list:
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    if len(items) < 4 or workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:  # PNG/JPEG decoding and numpy sums release the GIL
        return list(pool.map(fn, items))


def _header_pixels(path: Path) -> int:
    """Pixels an image's header declares (0 when it cannot be read: :func:`read_image` says why)."""
    try:
        with Image.open(path) as im:
            return im.size[0] * im.size[1]
    except Exception:  # noqa: BLE001 - the read that follows names the problem
        return 0


def read_images(paths: Sequence[str | Path], workers: int | None = None) -> list[Tensor]:
    """Read many images concurrently (threads); same layout rules as :func:`read_image`. The
    memory they take decoded (4 bytes a pixel, from their headers) is checked against the
    available memory first."""
    paths = [Path(p) for p in paths]
    if paths:
        check_memory(4 * sum(_parallel(_header_pixels, paths, workers)), f"{len(paths)} images decoded",
                     paths[0].parent)
    return _parallel(read_image, paths, workers)


def read_masks(paths: Sequence[str | Path], workers: int | None = None) -> list[Tensor]:
    """Read many masks concurrently; see :func:`read_mask`."""
    return _parallel(read_mask, [Path(p) for p in paths], workers)


def _blocks(a: np.ndarray, factor: int) -> np.ndarray:
    """View [H, W, ...] as [H/f, f, W/f, f, ...], dropping rows/columns past the last full block."""
    H, W = a.shape[0] // factor, a.shape[1] // factor
    if H == 0 or W == 0:
        raise ValueError(f"cannot downscale a {a.shape[1]}x{a.shape[0]} image by {factor}")
    return a[:H * factor, :W * factor].reshape(H, factor, W, factor, *a.shape[2:])


def downscale_image(img: Tensor, factor: int) -> Tensor:
    """Area-average a uint8 image [H, W, C] by an integer ``factor`` (box filter).

    Rows/columns beyond the last full block are dropped (so width becomes W // factor, and
    pixel-corner coordinates scale exactly by 1/factor). RGBA is averaged in premultiplied
    alpha, so compositing the result on any background equals averaging the composites. Sums
    are exact integers; only the final value is rounded to 8 bits.
    """
    if factor == 1:
        return img
    b = _blocks(img.numpy(), factor)
    n = factor * factor
    if b.shape[-1] == 4:
        a = b[..., 3:].astype(np.uint32)
        P = (b[..., :3] * a).sum((1, 3), dtype=np.uint32)  # premultiplied, scaled by 255
        A = a.sum((1, 3), dtype=np.uint32)
        rgb = np.where(A > 0, (2 * P + A) // (2 * np.maximum(A, 1)), 0)
        out = np.concatenate([rgb, (2 * A + n) // (2 * n)], -1)
    else:
        out = (2 * b.sum((1, 3), dtype=np.uint32) + n) // (2 * n)
    return torch.from_numpy(out.astype(np.uint8))


def downscale_mask(mask: Tensor, factor: int) -> Tensor:
    """Downscale a bool mask by ``factor``: a block is kept when more than half of it is True."""
    if factor == 1:
        return mask
    return torch.from_numpy(2 * _blocks(mask.numpy(), factor).sum((1, 3)) > factor * factor)


def downscale_images(images: Sequence[Tensor], factor: int, workers: int | None = None) -> list[Tensor]:
    """:func:`downscale_image` over many images, concurrently (threads)."""
    return _parallel(lambda img: downscale_image(img, factor), images, workers)


def to_uint8(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (or uint8) -> contiguous uint8 array."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frames must be [H, W, 3], got shape {frame.shape}")
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    return np.floor(np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # round half up
