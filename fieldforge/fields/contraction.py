"""Scene contraction for unbounded scenes (mip-NeRF 360, "Mip-NeRF 360: Unbounded Anti-Aliased
Neural Radiance Fields", arXiv:2111.12077), in the L-infinity form nerfstudio uses for grids.

Coordinates ``u`` are the foreground box mapped to [-1, 1]^3. Inside it ``contract(u) = u``;
outside, ``contract(u) = (2 - 1 / |u|) u / |u|`` with ``|u|`` the L-infinity norm, so all of space
maps into [-2, 2]^3: the foreground keeps its resolution (the middle half of each axis) and the
rest of the world, out to infinity, fills the shell between the box and twice its size, spaced
like inverse distance. The map is continuous and monotone along every ray from the centre.
"""

from __future__ import annotations

import torch
from torch import Tensor


def contract(u: Tensor) -> Tensor:
    """[..., 3] -> [..., 3] in [-2, 2]^3 (see the module docstring). Non-finite inputs are not
    allowed (a point at infinity has no direction to keep)."""
    n = u.abs().amax(-1, keepdim=True)
    far = n.clamp_min(1.0)
    return torch.where(n <= 1.0, u, (2.0 - 1.0 / far) * (u / far))
