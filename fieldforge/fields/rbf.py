"""Gaussian RBF radiance field (GNF-SH; "Gaussian RBFNet", arXiv:2503.06762): hash grid + one RBF layer.

Points are normalised to [0, 1]^3 by the field's ``aabb`` (clamped before the lookup); points
outside get zero density. A low-resolution multi-level hash grid gives features F (level-major,
dim D = n_levels * n_features); the decoder is a single layer of N Gaussian units in *feature*
space plus a linear term (no MLP):

    phi_i(F) = exp(-sum_k beta_ik (F_k - mu_ik)^2),  beta = softplus(rho)   (:class:`GaussianRBFLayer`)
    y(F)     = F W^T + b + phi(F) w,     W [1 + 3K, D], b [1 + 3K], w [N, 1 + 3K]

    density = trunc_exp(y_0 - 1)                     (as :class:`NGPField`)
    c[ch, k] = y[1 + ch * K + k]                     (channel-major, ch = r, g, b; K = (sh_degree + 1)^2)
    rgb[ch] = sigmoid(sum_k c[ch, k] Y_k(d))         (Y_k: :func:`sh_basis`, tiny-cuda-nn / gsplat signs)

``sh_degree`` is the highest SH band (3DGS convention: 2 -> bands 0..2 -> K = 9), i.e.
``sh_basis(d, sh_degree + 1)`` in the repo's band-count convention. ``d`` must be unit vectors
(Field contract; not renormalised). ``t`` is ignored. Activations (the paper leaves them open):
trunc_exp density with the -1 shift, as NGPField, so the ray marcher / occupancy thresholds
behave alike; sigmoid on the SH sum.

Initialisation (reconstructed, not stated by the paper): table U(+-init_scale) with init_scale = 0.1 (not
tiny-cuda-nn's 1e-4, which would make all features ~0 and the units overlap); centres = grid
features at 4096 random points of [0, 1]^3 and isotropic beta = 1 / median squared distance
(:meth:`GaussianRBFLayer.init_from_samples`); W, b as ``nn.Linear``; w ~ N(0, 0.01^2).

Defaults, for a ~200 px NeRF-synthetic scene (lego) trained on CPU: 8 levels from 16 to 256
(256 cells across the aabb ~ the pixel footprint of 200 px views, finer levels are not
constrained by the data; 8 instead of NGP's 16 levels halves the trilinear gathers, the CPU
bottleneck); 4 features per level, D = 32 (the decoder has no hidden layer, so the feature
space the units live in is where capacity comes from; the spec's "low-resolution grid"); 2^17
table rows per level (levels up to 36^3 are dense, 53..256 hashed; ~2.9 M table parameters, as
the repo's NGP config); 32 units (spec: fewer than 64, the layer is O(B N D)). D = 32 >= 1 + 3K = 28
lets the linear term alone set every output independently; n_features=2 is faster but
rank-limits it to 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fieldforge.encoders.hashgrid import HashGrid
from fieldforge.encoders.rbf import GaussianRBFLayer
from fieldforge.encoders.sh import MAX_DEGREE, sh_basis
from fieldforge.fields.base import Field
from fieldforge.fields.mlp import trunc_exp

MAX_UNITS = 64


class RBFField(Field):
    """GNF-SH radiance field: hash-grid features -> linear + N Gaussian units -> density, SH colour."""

    def __init__(self, aabb: Tensor, n_units: int = 32, n_levels: int = 8, n_features: int = 4,
                 log2_hashmap_size: int = 17, base_resolution: int = 16, max_resolution: int = 256,
                 sh_degree: int = 2, seed: int = 0, *, init_scale: float = 0.1, init_samples: int = 4096):
        super().__init__(aabb)
        if not 1 <= int(n_units) <= MAX_UNITS:
            raise ValueError(f"RBFField: n_units must be in 1..{MAX_UNITS}, got {n_units}")
        if not 0 <= int(sh_degree) <= MAX_DEGREE - 1:
            raise ValueError(f"RBFField: sh_degree must be in 0..{MAX_DEGREE - 1}, got {sh_degree}")
        if not bool((self.aabb[1] > self.aabb[0]).all()):
            raise ValueError(f"RBFField: aabb must have min < max on every axis, got {self.aabb.tolist()}")
        g = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):  # table and linear init reproducible from ``seed``
            torch.manual_seed(int(seed))
            self.grid = HashGrid(in_dim=3, n_levels=n_levels, n_features=n_features,
                                 log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                                 init_scale=init_scale,
                                 **({"max_resolution": max_resolution} if int(n_levels) > 1 else {}))
            self.sh_degree = int(sh_degree)
            self.n_coeffs = (self.sh_degree + 1) ** 2
            out_dim = 1 + 3 * self.n_coeffs
            self.rbf = GaussianRBFLayer(self.grid.out_dim, n_units)
            self.linear = nn.Linear(self.grid.out_dim, out_dim)
            self.w = nn.Parameter(torch.randn(int(n_units), out_dim, generator=g) * 1e-2)
        with torch.no_grad():
            self.rbf.init_from_samples(self.grid(torch.rand(int(init_samples), 3, generator=g)), g)

    def _check(self, x: Tensor, name: str = "x") -> None:
        if x.ndim < 1 or x.shape[-1] != 3:
            raise ValueError(f"RBFField: expected {name} [..., 3], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"RBFField: expected floating-point {name}, got {x.dtype}")

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Grid features F [..., D] of world points ``x`` (clamped into the aabb) and the inside mask [..., 1]."""
        self._check(x)
        xn = self.normalize(x)
        inside = ((xn >= 0) & (xn <= 1)).all(-1, keepdim=True)
        return self.grid(xn.clamp(0, 1)), inside

    def decode(self, f: Tensor) -> Tensor:
        """Raw decoder output y(F) = F W^T + b + phi(F) w, [..., 1 + 3K]."""
        n_out = self.w.shape[1]
        return torch.addmm(F.linear(f, self.linear.weight, self.linear.bias).reshape(-1, n_out),
                           self.rbf(f).reshape(-1, self.w.shape[0]), self.w).reshape(*f.shape[:-1], n_out)

    def _raw(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f, inside = self.features(x)
        y = self.decode(f)
        return trunc_exp(y[..., :1] - 1.0) * inside, y[..., 1:]

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self._raw(x)[0]

    def sh_coeffs(self, x: Tensor) -> Tensor:
        """SH coefficients c [..., 3, K] (channel-major) of world points ``x``."""
        return self._raw(x)[1].unflatten(-1, (3, self.n_coeffs))

    def forward(self, x: Tensor, d: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
        self._check(d, "d")
        density, c = self._raw(x)
        basis = sh_basis(d.to(c.dtype), self.sh_degree + 1)  # [..., K]
        rgb = torch.sigmoid((c.unflatten(-1, (3, self.n_coeffs)) * basis[..., None, :]).sum(-1))
        return {"density": density, "rgb": rgb}
