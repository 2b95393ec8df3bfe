"""Inputs of ``fieldforge process``: a folder of photographs or a video, gathered into
``ROOT/images/`` with box-downscaled copies ``ROOT/images_K/`` (same file names).

Photographs (the top level of the folder, suffixes :data:`IMAGE_SUFFIXES`) are copied byte for
byte, so COLMAP still reads their EXIF focal length; each is decoded first, so an unreadable file
stops the run before any reconstruction. Every image must have the size of the first (one camera).
Video frames are decoded with imageio's ffmpeg plugin and written as ``frame_00001.png``, ...
(1-based, in time order).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

from fieldforge.errors import DataError
from fieldforge.scenes.images import downscale_image, read_image
from fieldforge.scenes.loaders.build import natural_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
MIN_IMAGES = 3  # the fewest worth reconstructing: COLMAP's initial pair and one image more


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The photographs directly inside ``folder``, in natural name order."""
    if not folder.is_dir():
        raise DataError(folder, f"not a folder of images nor a video ({', '.join(VIDEO_SUFFIXES)})")
    paths = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: natural_key(p.name))
    if not paths:
        raise DataError(folder, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def frame_indices(total: int, video_fps: float, fps: float | None, num_frames: int | None) -> np.ndarray:
    """Indices of the frames to keep from a video of ``total`` frames at ``video_fps``: one every
    1/``fps`` seconds (all when ``fps`` >= ``video_fps``), else ``num_frames`` evenly spread over
    the whole video, first and last included (all when there are fewer)."""
    if fps is not None:
        step = max(video_fps / fps, 1.0)
        return np.unique(np.floor(np.arange(0, total / step) * step + 1e-9).astype(np.int64).clip(0, total - 1))
    if num_frames >= total:
        return np.arange(total)
    return np.round(np.linspace(0, total - 1, num_frames)).astype(np.int64)


class _Writer:
    """Checks each image against the first one's size and writes its downscaled copies."""

    def __init__(self, root: Path, downscales: list[int]):
        self.root, self.downscales, self.size, self.first = root, downscales, None, None
        for k in (1, *downscales):
            (root / self.folder(k)).mkdir(parents=True)

    @staticmethod
    def folder(k: int) -> str:
        return "images" if k == 1 else f"images_{k}"

    def add(self, source: Path, name: str, img: torch.Tensor) -> None:
        h, w = img.shape[:2]
        if self.size is None:
            small = [k for k in self.downscales if min(w, h) // k < 1]
            if small:
                raise DataError(source, f"image is {w}x{h}, too small for --downscales {small[0]}")
            self.size, self.first = (w, h), source.name
        elif (w, h) != self.size:
            raise DataError(source, f"image is {w}x{h} but {self.first} is {self.size[0]}x{self.size[1]} "
                                    "(all images must share one camera and size)")
        extra = {"quality": 95} if Path(name).suffix.lower() in (".jpg", ".jpeg") else {}
        for k in self.downscales:
            small = downscale_image(img, k).numpy()
            iio.imwrite(self.root / self.folder(k) / name, small, **extra)


def gather_images(folder: Path, root: Path, downscales: list[int]) -> tuple[list[str], tuple[int, int]]:
    """Copy the photographs of ``folder`` to ``root/images`` (+ downscales); their file names and
    (width, height)."""
    paths = list_images(folder)
    if len(paths) < MIN_IMAGES:
        raise DataError(folder, f"only {len(paths)} image(s); at least {MIN_IMAGES} are needed")
    writer = _Writer(root, downscales)
    for p in tqdm(paths, desc="images", unit="img"):
        img = read_image(p)
        shutil.copy2(p, root / "images" / p.name)
        writer.add(p, p.name, img)
    return [p.name for p in paths], writer.size


def gather_video(video: Path, root: Path, downscales: list[int], fps: float | None,
                 num_frames: int | None) -> tuple[list[str], tuple[int, int]]:
    """Sample frames of ``video`` (see :func:`frame_indices`) to ``root/images`` (+ downscales);
    their file names and (width, height)."""
    import imageio_ffmpeg

    try:
        video_fps = float(iio.immeta(video, plugin="FFMPEG")["fps"])
        total = imageio_ffmpeg.count_frames_and_secs(str(video))[0]
    except Exception as e:  # imageio / ffmpeg raise OSError, RuntimeError, KeyError...
        raise DataError(video, f"cannot read video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    keep = frame_indices(total, video_fps, fps, num_frames)
    if len(keep) < MIN_IMAGES:
        raise DataError(video, f"only {len(keep)} frame(s) sampled from {total}; at least {MIN_IMAGES} are needed "
                               "(raise --fps or --num-frames)")
    wanted = set(keep.tolist())
    writer = _Writer(root, downscales)
    names = []
    try:
        frames = tqdm(iio.imiter(video, plugin="FFMPEG"), total=int(keep[-1]) + 1, desc="video frames", unit="frame")
        for i, frame in enumerate(frames):
            if i in wanted:
                name = f"frame_{len(names) + 1:05d}.png"
                iio.imwrite(root / "images" / name, frame)
                writer.add(video, name, torch.from_numpy(np.ascontiguousarray(frame)))
                names.append(name)
            if i >= keep[-1]:
                break
    except DataError:
        raise
    except Exception as e:  # a truncated or corrupt stream
        raise DataError(video, f"cannot decode the video after {len(names)} kept frames ({type(e).__name__}: {e})") from None
    return names, writer.size
