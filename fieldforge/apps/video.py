"""Writing rendered frames: an mp4 (H.264 through imageio-ffmpeg), a GIF, or a folder of PNGs.

Frames are [H, W, 3] RGB, either floats in [0, 1] (clamped, then rounded half up to 8 bits with no
gamma change: values are written as they are, like the dataset PNGs they were trained on) or
uint8. MP4 frames of odd width or height get their last column / row repeated (H.264 needs
even sizes). The output kind follows the suffix of ``out``: ``.mp4``, ``.gif``, anything else is a
directory receiving ``00000.png``, ``00001.png``, ...
"""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import torch

from fieldforge.errors import FieldforgeError


def output_kind(out: str | Path) -> str:
    """"mp4", "gif" or "png" (a directory) from the suffix of ``out``."""
    suffix = Path(out).suffix.lower()
    return {".mp4": "mp4", ".gif": "gif"}.get(suffix, "png")


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


class FrameWriter:
    """Append frames one at a time; use as a context manager. ``fps`` is frames per second."""

    def __init__(self, out: str | Path, fps: float):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.out = Path(out)
        self.kind = output_kind(self.out)
        self.count = 0
        self._writer = None
        self._gif_ms = 1000.0 / fps
        self._gif_frames: list[np.ndarray] = []  # GIFs are written in one go on close
        try:
            if self.kind == "png":
                self.out.mkdir(parents=True, exist_ok=True)
            else:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                if self.kind == "mp4":
                    self._writer = imageio_v2.get_writer(self.out, format="FFMPEG", mode="I", fps=fps,
                                                         codec="libx264", quality=8, macro_block_size=1,
                                                         ffmpeg_log_level="error")
        except OSError as e:
            raise FieldforgeError(f"{self.out}: cannot write output: {e}") from None

    def append(self, frame: torch.Tensor | np.ndarray) -> None:
        img = to_uint8(frame)
        if self.kind == "png":
            iio.imwrite(self.out / f"{self.count:05d}.png", img)
        elif self.kind == "mp4":
            # H.264 in yuv420p needs even sizes: an odd last row/column is repeated once
            h, w = img.shape[:2]
            self._writer.append_data(np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
        else:
            self._gif_frames.append(img)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._gif_frames:
            try:
                iio.imwrite(self.out, np.stack(self._gif_frames), duration=self._gif_ms, loop=0)
            except OSError as e:
                raise FieldforgeError(f"{self.out}: cannot write output: {e}") from None
            self._gif_frames = []

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
