"""Camera-path keyframes edited in the viewer and saved as the JSON ``fieldforge render --path``
reads (:func:`fieldforge.scenes.paths.save_path`)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from fieldforge.scenes import Cameras
from fieldforge.scenes.paths import save_path


class Keyframes:
    """An ordered list of keyframe cameras of one image size (the output size of the path)."""

    def __init__(self, width: int, height: int):
        self.width, self.height = int(width), int(height)
        self.cameras: list[Cameras] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.cameras)

    def add(self, camera: Cameras) -> Cameras:
        """Append ``camera`` [1] resized to the path size, keeping its vertical field of view and
        centring the principal point; returns the stored keyframe."""
        scale = self.height / float(camera.height[0])
        K = torch.tensor([[float(camera.K[0, 1, 1]) * scale, 0.0, self.width / 2],
                          [0.0, float(camera.K[0, 1, 1]) * scale, self.height / 2], [0.0, 0.0, 1.0]])
        kf = Cameras(K=K[None], c2w=camera.c2w[:1].clone(), width=torch.tensor([self.width]),
                     height=torch.tensor([self.height]), times=camera.times)
        with self._lock:
            self.cameras.append(kf)
        return kf

    def clear(self) -> None:
        with self._lock:
            self.cameras.clear()

    def stacked(self) -> Cameras:
        """All keyframes as one Cameras (times only when every keyframe has one)."""
        with self._lock:
            cams = list(self.cameras)
        if not cams:
            raise ValueError("no keyframes")
        timed = all(c.times is not None for c in cams)
        return Cameras(K=torch.cat([c.K for c in cams]), c2w=torch.cat([c.c2w for c in cams]),
                       width=torch.cat([c.width for c in cams]), height=torch.cat([c.height for c in cams]),
                       times=torch.cat([c.times for c in cams]) if timed else None)

    def save(self, path: str | Path, frames: int | None = None) -> Path:
        """Write the keyframes to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            save_path(tmp, self.stacked(), n_frames=frames)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
