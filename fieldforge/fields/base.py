"""The Field contract: what the ray marcher, exporters and viewer may ask of a field.

A field maps world-space points ``x`` [..., 3] (same units as the scene's bounds), unit view
directions ``d`` [..., 3] (camera -> sample) and an optional time ``t`` [..., 1] in [0, 1] to
named channels. ``density`` is volume density sigma >= 0 in 1/world-units; ``rgb`` is linear
colour in [0, 1]. Extra named channels (e.g. "normals", "semantics") are returned in the same
dict and listed in ``channels``. Fields never see rays or cameras.

A field whose colour is a cheap head on features its density already computed (NGP's geometry
features) sets ``splits_appearance`` and implements :meth:`geometry` and :meth:`appearance`, with
``forward(x, d, t) == {"density": geometry(x, t)[0], **appearance(geometry(x, t)[1], d, t)}``;
renderers then evaluate the appearance only where a sample has weight. A field whose geometry
starts with a costly input encoding (NGP's hash-grid lookup) may also set ``reuses_encoding`` and
implement :meth:`encode`: a renderer that needs the geometry of the same points twice, first
without gradients (to prune samples) and then with them (to train on the kept ones), encodes them
once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Field(nn.Module):
    """Base class. Subclasses implement :meth:`density` and :meth:`forward`."""

    #: names of the extra channels ``forward`` returns besides density and rgb
    channels: tuple[str, ...] = ()
    #: whether :meth:`geometry` / :meth:`appearance` split :meth:`forward` without recomputation
    splits_appearance: bool = False
    #: whether :meth:`encode` exists and :meth:`geometry` takes its result back (a splitting field only)
    reuses_encoding: bool = False

    def __init__(self, aabb: Tensor):
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())

    def normalize(self, x: Tensor) -> Tensor:
        """World points -> [0, 1]^3 inside ``aabb`` (points outside map outside [0, 1])."""
        return (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:  # [..., 1]
        raise NotImplementedError

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def geometry(self, x: Tensor, t: Tensor | None = None, encoding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Density [..., 1] and the features [..., F] :meth:`appearance` finishes the point from
        (only when ``splits_appearance``). ``encoding`` (only when ``reuses_encoding``):
        ``encode(x, t)``, computed earlier without gradients; the result is the same in value and
        gradient, without encoding again."""
        raise NotImplementedError(f"{type(self).__name__} does not split its appearance")

    def encode(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """The input encoding [..., E] :meth:`geometry` starts from (only when ``reuses_encoding``)."""
        raise NotImplementedError(f"{type(self).__name__} does not reuse its encoding")

    def appearance(self, features: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        """"rgb" and the extra channels of points with ``features`` from :meth:`geometry`, seen along
        ``d`` (only when ``splits_appearance``)."""
        raise NotImplementedError(f"{type(self).__name__} does not split its appearance")
