"""Real spherical harmonics of unit view directions (tiny-cuda-nn / gsplat sign convention).

``degree`` follows tiny-cuda-nn: it is the number of bands, giving degree^2 outputs
(degree 4 -> 16 outputs = bands 0..3 = 3DGS ``sh_degree`` 3). Inputs are raw unit vectors
in world axes (no (v+1)/2 mapping); they are not renormalised here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fieldforge import kernels
from fieldforge.encoders.base import Encoding

MAX_DEGREE = 5


def sh_basis(d: Tensor, degree: int) -> Tensor:
    """Real SH basis Y_0 .. Y_{degree^2 - 1} of unit directions ``d`` [..., 3] -> [..., degree^2].
    Float32 CPU directions that need no gradient take the kernel of :mod:`fieldforge.kernels.sh`
    (the same values, computed in float64 and rounded once)."""
    if (d.dtype == torch.float32 and 1 <= degree <= MAX_DEGREE and kernels.enabled(d)
            and not (d.requires_grad and torch.is_grad_enabled())):
        try:
            from fieldforge.kernels import sh
            return sh.basis(d, degree)
        except kernels.Unavailable:
            pass
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x]
    if degree > 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.31539156525252005 * (3 * zz - 1),
                -1.0925484305920792 * xz, 0.5462742152960396 * (xx - yy)]
    if degree > 3:
        out += [-0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * xy * z,
                -0.4570457994644658 * y * (5 * zz - 1), 0.3731763325901154 * z * (5 * zz - 3),
                -0.4570457994644658 * x * (5 * zz - 1), 1.445305721320277 * z * (xx - yy),
                -0.5900435899266435 * x * (xx - 3 * yy)]
    if degree > 4:
        out += [2.5033429417967046 * xy * (xx - yy), -1.7701307697799304 * yz * (3 * xx - yy),
                0.9461746957575601 * xy * (7 * zz - 1), -0.6690465435572892 * yz * (7 * zz - 3),
                0.10578554691520431 * (35 * zz * zz - 30 * zz + 3), -0.6690465435572892 * xz * (7 * zz - 3),
                0.47308734787878004 * (xx - yy) * (7 * zz - 1), -1.7701307697799304 * xz * (xx - 3 * yy),
                0.6258357354491761 * (xx * xx - 6 * xx * yy + yy * yy)]
    return torch.stack(out, -1)


class SHEncoding(Encoding):
    """Real SH encoding of unit directions [..., 3] -> [..., degree^2]; degree in 1..5 (bands)."""

    input_range = (-1.0, 1.0)

    def __init__(self, degree: int = 4):
        super().__init__(3)
        if not 1 <= int(degree) <= MAX_DEGREE:
            raise ValueError(f"SHEncoding: degree (number of bands) must be in 1..{MAX_DEGREE}, got {degree}")
        self.degree = int(degree)
        self.out_dim = self.degree ** 2

    def forward(self, d: Tensor) -> Tensor:
        self._check(d)
        return sh_basis(d, self.degree)
