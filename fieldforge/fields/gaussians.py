"""The Gaussian scene model: stored pre-activation parameters and their activations.

Stored (as in gsplat / Inria checkpoints and the 3DGS .ply): ``means`` [N, 3] world units;
``scales`` [N, 3] log-scales (activation exp); ``quats`` [N, 4] wxyz, unnormalised (the
renderer normalises); ``opacities`` [N] logits (activation sigmoid); ``sh0`` [N, 1, 3] DC and
``shN`` [N, K-1, 3] higher-order SH coefficients, K = (sh_degree + 1)^2. The rendered colour
is max(SH(dir) + 0.5, 0), so an RGB colour c has DC coefficient (c - 0.5) / Y_0.

Subclasses may carry non-learned per-Gaussian tensors (named in ``PER_GAUSSIAN``, first axis N);
densification edits them together with the parameters (clone and split copy them to children).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


SH_C0 = 0.28209479177387814  # Y_0 = 1 / (2 sqrt(pi))
PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC SH coefficient whose rendered colour is ``rgb`` (linear, [0, 1])."""
    return (rgb - 0.5) / SH_C0


def knn_mean_distance(points: Tensor, k: int = 3) -> Tensor:
    """Mean distance [P] of each point to its ``k`` nearest other points (scipy cKDTree)."""
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().double().numpy()
    k = min(k, len(pts) - 1)
    if k < 1:
        return torch.ones(len(pts), dtype=points.dtype, device=points.device)
    dist, _ = cKDTree(pts).query(pts, k=k + 1)
    return torch.as_tensor(dist[:, 1:].mean(1), dtype=points.dtype).to(points.device)


class GaussianModel(nn.Module):
    """N Gaussians with SH colour up to ``sh_degree``; parameters are ``nn.Parameter``s."""

    PER_GAUSSIAN: tuple[str, ...] = ()  # non-learned per-Gaussian buffers (see module docstring)

    def __init__(self, n: int = 0, sh_degree: int = 3):
        super().__init__()
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"GaussianModel: sh_degree must be in 0..3, got {sh_degree}")
        self.sh_degree = sh_degree
        k = (sh_degree + 1) ** 2
        shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,),
                  "sh0": (n, 1, 3), "shN": (n, k - 1, 3)}
        for name in PARAM_NAMES:
            setattr(self, name, nn.Parameter(torch.zeros(shapes[name])))

    @classmethod
    def from_points(cls, points: Tensor, colors: Tensor, sh_degree: int = 3, init_opacity: float = 0.1,
                    init_scale: float = 1.0, generator: torch.Generator | None = None) -> "GaussianModel":
        """gsplat's initialisation: isotropic log-scale = log(init_scale x mean distance to the 3
        nearest neighbours), random unit quaternions, opacity ``init_opacity``, DC from ``colors``
        ([P, 3] in [0, 1]), higher SH zero."""
        model = cls(len(points), sh_degree)
        dist = knn_mean_distance(points).clamp_min(1e-7)
        with torch.no_grad():
            model.means.copy_(points)
            model.scales.copy_(torch.log(dist * init_scale)[:, None].expand(-1, 3))
            model.quats.copy_(torch.randn(len(points), 4, generator=generator))
            model.opacities.fill_(math.log(init_opacity / (1 - init_opacity)))
            model.sh0.copy_(rgb_to_sh0(colors.float())[:, None, :])
        return model

    def __len__(self) -> int:
        return self.means.shape[0]

    def params(self) -> dict[str, nn.Parameter]:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def set_params(self, values: dict[str, Tensor]) -> None:
        """Replace every parameter (any N) by new leaf ``nn.Parameter``s."""
        for name in PARAM_NAMES:
            setattr(self, name, nn.Parameter(values[name].detach().clone()))

    def resize(self, n: int) -> None:
        """Resize every parameter to ``n`` Gaussians (zeros), e.g. before ``load_state_dict``."""
        self.set_params({name: p.new_zeros((n,) + p.shape[1:]) for name, p in self.params().items()})

    def activated_opacities(self) -> Tensor:
        return torch.sigmoid(self.opacities)

    def sh(self) -> Tensor:
        """[N, K, 3] SH coefficients (DC first). Without autograd (rendering a trained model, e.g. in
        the viewer) the concatenation is kept and reused until either part changes."""
        if torch.is_grad_enabled():
            return torch.cat([self.sh0, self.shN], 1)
        # the parts themselves are kept (not their ids, which a new tensor may reuse) with their versions
        parts, versions = (self.sh0, self.shN), (self.sh0._version, self.shN._version)
        cached = getattr(self, "_sh_cache", None)
        if cached is None or any(a is not b for a, b in zip(cached[0], parts)) or cached[1] != versions:
            cached = self._sh_cache = (parts, versions, torch.cat(parts, 1))
        return cached[2]
