"""The ``Scene``: what every loader returns and every method trains on.

Images are kept as uint8 tensors [H, W, C] with C = 3 (RGB) or 4 (RGBA, straight alpha).
For RGBA images the ground truth is composited onto the evaluation background:
``rgb * a + bg * (1 - a)`` in linear [0, 1] floats. ``bounds`` is an axis-aligned box
[2, 3] (min, max) in world units that contains what is to be reconstructed;
``near``/``far`` are Euclidean ray distances for unit directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from fieldforge.scenes.cameras import Cameras

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def background_rgb(name: str | tuple | None) -> Tensor:
    """Background colour [3] from a name ('white', 'black') or an RGB triple in [0, 1]."""
    if name is None:
        return torch.ones(3)
    if isinstance(name, str):
        if name not in BACKGROUNDS:
            raise ValueError(f"unknown background {name!r}; use white, black or an RGB triple")
        return torch.tensor(BACKGROUNDS[name])
    return torch.as_tensor(name, dtype=torch.float32).reshape(3)


@dataclass
class Scene:
    cameras: Cameras
    images: list[Tensor]  # each [H, W, 3|4] uint8
    names: list[str]
    splits: dict[str, Tensor]  # split name -> long indices into cameras/images
    bounds: Tensor  # [2, 3] aabb (min, max), world units
    near: float = 0.0
    far: float = 1e10
    masks: list[Tensor] | None = None  # each [H, W] bool, True = use pixel
    points: Tensor | None = None  # [P, 3] seed points (world)
    point_colors: Tensor | None = None  # [P, 3] uint8
    background: str = "white"  # evaluation background for RGBA images
    format: str = ""
    source: Path = field(default_factory=Path)
    protocol: dict = field(default_factory=dict)  # how splits etc. were made, for reports

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_alpha(self) -> bool:
        return bool(self.images) and self.images[0].shape[-1] == 4

    @property
    def times(self) -> Tensor | None:
        return self.cameras.times

    def split(self, name: str) -> "Scene":
        """The sub-scene of one split, with indices renumbered from 0."""
        if name not in self.splits:
            raise KeyError(f"{self.source}: no split {name!r}; available: {sorted(self.splits)}")
        idx = self.splits[name]
        return replace(
            self,
            cameras=self.cameras[idx],
            images=[self.images[i] for i in idx.tolist()],
            names=[self.names[i] for i in idx.tolist()],
            masks=None if self.masks is None else [self.masks[i] for i in idx.tolist()],
            splits={name: torch.arange(len(idx))},
        )

    def rgb(self, i: int, background: str | tuple | Tensor | None = None) -> Tensor:
        """Image ``i`` as float [H, W, 3] in [0, 1], alpha composited onto ``background``."""
        img = self.images[i].float() / 255.0
        if img.shape[-1] == 3:
            return img
        bg = background if isinstance(background, Tensor) else background_rgb(background or self.background)
        a = img[..., 3:]
        return img[..., :3] * a + bg.to(img) * (1 - a)
