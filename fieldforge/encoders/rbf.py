"""Gaussian RBF grid (Gaussian RBFNet / GNF, arXiv:2503.06762).

A low-resolution multi-level grid (:class:`HashGrid`, x in [0, 1]^d) gives features F; one layer
of N Gaussian units in *feature space* follows:

    phi_i(F) = exp(-sum_k beta_ik (F_k - mu_ik)^2),   beta = softplus(rho) > 0 (per dimension)

:class:`RBFGridEncoding` outputs ``[F, phi(F)]``, so a following linear layer is exactly the
GNF model y = F W + b + sum_i w_i phi_i(F); :func:`rbf_field` builds that whole signal model.
Centres are initialised from the features of the initialised grid at random points, and beta so
that exp(-q) = e^-1 at the median feature-to-centre squared distance (both reconstructed, the
paper's code being unavailable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fieldforge.encoders.base import Encoding
from fieldforge.encoders.hashgrid import HashGrid


class GaussianRBFLayer(nn.Module):
    """[..., in_dim] -> [..., n_units] Gaussian activations with learned centres and diagonal scales."""

    def __init__(self, in_dim: int, n_units: int):
        super().__init__()
        if int(in_dim) < 1 or int(n_units) < 1:
            raise ValueError(f"GaussianRBFLayer: in_dim and n_units must be >= 1, got {in_dim}, {n_units}")
        self.in_dim, self.out_dim = int(in_dim), int(n_units)
        self.mu = nn.Parameter(torch.zeros(self.out_dim, self.in_dim))
        self.rho = nn.Parameter(torch.zeros(self.out_dim, self.in_dim))

    @property
    def beta(self) -> Tensor:
        return F.softplus(self.rho)

    @torch.no_grad()
    def init_from_samples(self, feats: Tensor, generator: torch.Generator | None = None) -> None:
        """Centres = random rows of ``feats`` [M, in_dim]; isotropic beta = 1 / median squared distance."""
        m, n = feats.shape[0], self.out_dim
        pick = torch.randperm(m, generator=generator)[:n] if m >= n else torch.randint(m, (n,), generator=generator)
        self.mu.copy_(feats[pick])
        d2 = torch.cdist(feats, self.mu).square().median().clamp_min(1e-12)
        beta = (1.0 / d2).clamp(max=1e6)
        self.rho.fill_(float(beta + torch.log(-torch.expm1(-beta))))  # softplus^-1

    def forward(self, f: Tensor) -> Tensor:
        beta = self.beta
        bm = beta * self.mu
        # q = sum_k beta (f - mu)^2 expanded into two matmuls (no [B, N, D] intermediate)
        q = (f * f) @ beta.T - 2 * f @ bm.T + (bm * self.mu).sum(-1)
        return torch.exp(-q.clamp_min(0))


class RBFGridEncoding(Encoding):
    """x in [0, 1]^d -> ``[F (grid features), phi(F) (RBF units)]``, out_dim = L*F_l + n_units."""

    input_range = (0.0, 1.0)

    def __init__(self, in_dim: int = 2, n_units: int = 32, n_levels: int = 4, n_features: int = 4,
                 base_resolution: int = 8, max_resolution: int = 64, log2_hashmap_size: int = 16,
                 init_scale: float = 0.1, seed: int = 0):
        super().__init__(in_dim)
        self.grid = HashGrid(in_dim, n_levels=n_levels, n_features=n_features, base_resolution=base_resolution,
                             log2_hashmap_size=log2_hashmap_size, init_scale=init_scale,
                             **({"max_resolution": max_resolution} if n_levels > 1 else {}))
        self.rbf = GaussianRBFLayer(self.grid.out_dim, n_units)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            self.rbf.init_from_samples(self.grid(torch.rand(4096, self.in_dim, generator=g)), g)
        self.out_dim = self.grid.out_dim + self.rbf.out_dim

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        f = self.grid(x)
        return torch.cat([f, self.rbf(f)], -1)


def rbf_field(in_dim: int, out_dim: int, **kwargs) -> nn.Sequential:
    """The whole GNF signal model: :class:`RBFGridEncoding` followed by one linear layer."""
    enc = RBFGridEncoding(in_dim, **kwargs)
    model = nn.Sequential(enc, nn.Linear(enc.out_dim, out_dim))
    model.input_range = enc.input_range
    return model
