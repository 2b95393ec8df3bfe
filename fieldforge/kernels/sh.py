"""View-dependent colour from real spherical harmonics (forward and backward), numba CPU kernels.

Same semantics as the reference :func:`fieldforge.render.rasterize.sh_colors` (the colour model
of "3D Gaussian Splatting for Real-Time Radiance Field Rendering", arXiv:2308.04079):
colour = max(sum_k coeffs[k] Y_k(d / max(|d|, 1e-12)) + 0.5, 0) over the first
(sh_degree + 1)^2 bases of :func:`fieldforge.encoders.sh.sh_basis` (tiny-cuda-nn / gsplat sign
convention, directions in world axes), sh_degree 0..4. Gradients flow to the coefficients
(zero for the unused bases k >= (sh_degree + 1)^2) and to the directions through the
normalisation; the clamp passes gradient where the unclamped colour is >= 0, as torch's does.

:func:`basis` is the fast path of :func:`fieldforge.encoders.sh.sh_basis` itself (1..5 bands, no
gradient; the view directions of the NGP field's colour network).

Parallel over fixed blocks of Gaussians (bases computed for a whole block at once); every output value is
written by one thread, so results do not depend on the thread count. Storage is float32, the
arithmetic float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import prange
from torch import Tensor
from torch.autograd.function import once_differentiable

from fieldforge import kernels
from fieldforge.kernels._jit import jit, pjit

MAX_SH_DEGREE = 4
NORM_EPS = 1e-12  # F.normalize's eps
BLOCK = 64  # Gaussians per block (scratch bases laid out [basis, Gaussian] for vectorisation)

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, 0.31539156525252005, 0.5462742152960396)
C3 = (0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154, 1.445305721320277)
C4 = (2.5033429417967046, 1.7701307697799304, 0.9461746957575601, 0.6690465435572892, 0.10578554691520431,
      0.47308734787878004, 0.6258357354491761)


@jit
def _unit(dirs, lo, n, U):
    """U[:3, j] = dirs[lo + j] / max(|dirs[lo + j]|, eps) and U[3, j] = the clamped norm, j < n."""
    for j in range(n):
        x, y, z = float(dirs[lo + j, 0]), float(dirs[lo + j, 1]), float(dirs[lo + j, 2])
        norm = max(math.sqrt(x * x + y * y + z * z), NORM_EPS)
        U[0, j], U[1, j], U[2, j], U[3, j] = x / norm, y / norm, z / norm, norm


@pjit
def _basis_rows(dirs, nb, out):
    """out[i, k] = the k-th basis of dirs[i] as given (not normalised), k < nb, over blocks in parallel."""
    M = dirs.shape[0]
    for blk in prange((M + BLOCK - 1) // BLOCK):
        U, Y = np.empty((4, BLOCK)), np.empty((25, BLOCK))
        lo = blk * BLOCK
        n = min(M - lo, BLOCK)
        for j in range(n):
            U[0, j], U[1, j], U[2, j] = dirs[lo + j, 0], dirs[lo + j, 1], dirs[lo + j, 2]
        _basis(U, n, nb, Y)
        for j in range(n):
            for k in range(nb):
                out[lo + j, k] = Y[k, j]


@jit
def _basis(U, n, nb, Y):
    """Y[k, j] = the k-th real SH basis of the unit direction U[:3, j], k < nb in {1, 4, 9, 16, 25}.
    One loop per band over the block, so that the compiler vectorises it."""
    Y[0, :n] = C0
    if nb > 1:
        for j in range(n):
            x, y, z = U[0, j], U[1, j], U[2, j]
            Y[1, j], Y[2, j], Y[3, j] = -C1 * y, C1 * z, -C1 * x
    if nb > 4:
        for j in range(n):
            x, y, z = U[0, j], U[1, j], U[2, j]
            Y[4, j], Y[5, j] = C2[0] * x * y, -C2[0] * y * z
            Y[6, j], Y[7, j], Y[8, j] = C2[1] * (3 * z * z - 1), -C2[0] * x * z, C2[2] * (x * x - y * y)
    if nb > 9:
        for j in range(n):
            x, y, z = U[0, j], U[1, j], U[2, j]
            xx, yy, zz = x * x, y * y, z * z
            Y[9, j], Y[10, j] = -C3[0] * y * (3 * xx - yy), C3[1] * x * y * z
            Y[11, j], Y[12, j] = -C3[2] * y * (5 * zz - 1), C3[3] * z * (5 * zz - 3)
            Y[13, j], Y[14, j] = -C3[2] * x * (5 * zz - 1), C3[4] * z * (xx - yy)
            Y[15, j] = -C3[0] * x * (xx - 3 * yy)
    if nb > 16:
        for j in range(n):
            x, y, z = U[0, j], U[1, j], U[2, j]
            xx, yy, zz = x * x, y * y, z * z
            Y[16, j], Y[17, j] = C4[0] * x * y * (xx - yy), -C4[1] * y * z * (3 * xx - yy)
            Y[18, j], Y[19, j] = C4[2] * x * y * (7 * zz - 1), -C4[3] * y * z * (7 * zz - 3)
            Y[20, j], Y[21, j] = C4[4] * (35 * zz * zz - 30 * zz + 3), -C4[3] * x * z * (7 * zz - 3)
            Y[22, j], Y[23, j] = C4[5] * (xx - yy) * (7 * zz - 1), -C4[1] * x * z * (xx - 3 * yy)
            Y[24, j] = C4[6] * (xx * xx - 6 * xx * yy + yy * yy)


@jit
def _basis_vjp(U, n, nb, G, D):
    """D[:3, j] = sum_k G[k, j] dY_k/d(x, y, z) at U[:3, j] over the first nb bases (x, y, z
    taken as independent), one loop per band."""
    D[:, :n] = 0.0
    if nb > 1:
        for j in range(n):
            D[0, j], D[1, j], D[2, j] = -C1 * G[3, j], -C1 * G[1, j], C1 * G[2, j]
    if nb > 4:
        a, b, c = C2
        for j in range(n):
            x, y, z = U[0, j], U[1, j], U[2, j]
            D[0, j] += a * y * G[4, j] - a * z * G[7, j] + 2 * c * x * G[8, j]
            D[1, j] += a * x * G[4, j] - a * z * G[5, j] - 2 * c * y * G[8, j]
            D[2, j] += -a * y * G[5, j] + 6 * b * z * G[6, j] - a * x * G[7, j]
    if nb > 9:
        a, b, c, d, e = C3
        for j in range(n):
            x, y, z = U[0, j], U[1, j], U[2, j]
            xx, yy, zz = x * x, y * y, z * z
            D[0, j] += (-6 * a * x * y * G[9, j] + b * y * z * G[10, j] - c * (5 * zz - 1) * G[13, j]
                        + 2 * e * x * z * G[14, j] - 3 * a * (xx - yy) * G[15, j])
            D[1, j] += (-3 * a * (xx - yy) * G[9, j] + b * x * z * G[10, j] - c * (5 * zz - 1) * G[11, j]
                        - 2 * e * y * z * G[14, j] + 6 * a * x * y * G[15, j])
            D[2, j] += (b * x * y * G[10, j] - 10 * c * y * z * G[11, j] + d * (15 * zz - 3) * G[12, j]
                        - 10 * c * x * z * G[13, j] + e * (xx - yy) * G[14, j])
    if nb > 16:
        a, b, c, d, e, f, g = C4
        for j in range(n):
            x, y, z = U[0, j], U[1, j], U[2, j]
            xx, yy, zz = x * x, y * y, z * z
            D[0, j] += (a * y * (3 * xx - yy) * G[16, j] - 6 * b * x * y * z * G[17, j]
                        + c * y * (7 * zz - 1) * G[18, j] - d * z * (7 * zz - 3) * G[21, j]
                        + 2 * f * x * (7 * zz - 1) * G[22, j] - 3 * b * z * (xx - yy) * G[23, j]
                        + 4 * g * x * (xx - 3 * yy) * G[24, j])
            D[1, j] += (a * x * (xx - 3 * yy) * G[16, j] - 3 * b * z * (xx - yy) * G[17, j]
                        + c * x * (7 * zz - 1) * G[18, j] - d * z * (7 * zz - 3) * G[19, j]
                        - 2 * f * y * (7 * zz - 1) * G[22, j] + 6 * b * x * y * z * G[23, j]
                        + 4 * g * y * (yy - 3 * xx) * G[24, j])
            D[2, j] += (-b * y * (3 * xx - yy) * G[17, j] + 14 * c * x * y * z * G[18, j]
                        - d * y * (21 * zz - 3) * G[19, j] + e * (140 * zz * z - 60 * z) * G[20, j]
                        - d * x * (21 * zz - 3) * G[21, j] + 14 * f * z * (xx - yy) * G[22, j]
                        - b * x * (xx - 3 * yy) * G[23, j])


@jit
def _colour(coeffs, i, j, nb, Y):
    """The unclamped colour sum_k coeffs[i, k] Y[k, j] + 0.5 of Gaussian i (block column j)."""
    r0, r1, r2 = 0.5, 0.5, 0.5
    for k in range(nb):
        r0 += Y[k, j] * coeffs[i, k, 0]
        r1 += Y[k, j] * coeffs[i, k, 1]
        r2 += Y[k, j] * coeffs[i, k, 2]
    return r0, r1, r2


@pjit
def _forward(dirs, coeffs, nb, out):
    M = dirs.shape[0]
    for blk in prange((M + BLOCK - 1) // BLOCK):
        U, Y = np.empty((4, BLOCK)), np.empty((25, BLOCK))
        lo = blk * BLOCK
        n = min(M - lo, BLOCK)
        _unit(dirs, lo, n, U)
        _basis(U, n, nb, Y)
        for j in range(n):
            r0, r1, r2 = _colour(coeffs, lo + j, j, nb, Y)
            out[lo + j, 0], out[lo + j, 1], out[lo + j, 2] = max(r0, 0.0), max(r1, 0.0), max(r2, 0.0)


@pjit
def _backward(dirs, coeffs, nb, g_out, g_dirs, g_coeffs):
    M, K = dirs.shape[0], coeffs.shape[1]
    for blk in prange((M + BLOCK - 1) // BLOCK):
        U, Y, G, D = np.empty((4, BLOCK)), np.empty((25, BLOCK)), np.empty((25, BLOCK)), np.empty((3, BLOCK))
        lo = blk * BLOCK
        n = min(M - lo, BLOCK)
        _unit(dirs, lo, n, U)
        _basis(U, n, nb, Y)
        for j in range(n):
            i = lo + j
            r0, r1, r2 = _colour(coeffs, i, j, nb, Y)
            g0 = float(g_out[i, 0]) if r0 >= 0.0 else 0.0  # the clamp passes gradient at 0
            g1 = float(g_out[i, 1]) if r1 >= 0.0 else 0.0
            g2 = float(g_out[i, 2]) if r2 >= 0.0 else 0.0
            for k in range(nb):
                G[k, j] = g0 * coeffs[i, k, 0] + g1 * coeffs[i, k, 1] + g2 * coeffs[i, k, 2]
                g_coeffs[i, k, 0], g_coeffs[i, k, 1], g_coeffs[i, k, 2] = Y[k, j] * g0, Y[k, j] * g1, Y[k, j] * g2
            for k in range(nb, K):
                g_coeffs[i, k, 0], g_coeffs[i, k, 1], g_coeffs[i, k, 2] = 0.0, 0.0, 0.0
        _basis_vjp(U, n, nb, G, D)
        for j in range(n):
            # through d / max(|d|, eps): (g - u (u . g)) / |d|, or g / eps below eps
            x, y, z, norm = U[0, j], U[1, j], U[2, j], U[3, j]
            dot = (D[0, j] * x + D[1, j] * y + D[2, j] * z) if norm > NORM_EPS else 0.0
            g_dirs[lo + j, 0] = (D[0, j] - x * dot) / norm
            g_dirs[lo + j, 1] = (D[1, j] - y * dot) / norm
            g_dirs[lo + j, 2] = (D[2, j] - z * dot) / norm


class _SHColors(torch.autograd.Function):
    """Autograd wrapper over flattened dirs [M, 3] and coeffs [M, K, 3]."""

    @staticmethod
    def forward(ctx, sh_degree, dirs, coeffs):
        nb = (sh_degree + 1) ** 2
        d = kernels.as_array(dirs, torch.float32, "dirs", "sh_colors")
        co = kernels.as_array(coeffs, torch.float32, "coeffs", "sh_colors")
        out = torch.empty(dirs.shape[0], 3)
        kernels.call(_forward, d, co, nb, out.numpy())
        ctx.save_for_backward(dirs, coeffs)
        ctx.nb = nb
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        dirs, coeffs = ctx.saved_tensors
        g_dirs, g_coeffs = torch.empty(dirs.shape), torch.empty(coeffs.shape)
        kernels.call(_backward, dirs.detach().contiguous().numpy(), coeffs.detach().contiguous().numpy(), ctx.nb,
                     g_out.contiguous().numpy(), g_dirs.numpy(), g_coeffs.numpy())
        return None, g_dirs, g_coeffs


def basis(d: Tensor, degree: int) -> Tensor:
    """The fast path of :func:`fieldforge.encoders.sh.sh_basis` (no gradient) for float32 CPU
    directions [..., 3] (used as given, not normalised) and ``degree`` 1..5 bands -> [..., degree^2]
    (float32, computed in float64)."""
    if not 1 <= degree <= MAX_SH_DEGREE + 1:
        raise ValueError(f"sh basis: degree must be 1..{MAX_SH_DEGREE + 1} bands, got {degree}")
    flat = kernels.as_array(d.reshape(-1, 3), torch.float32, "d", "sh basis")
    out = torch.empty(flat.shape[0], degree * degree)
    kernels.call(_basis_rows, flat, degree * degree, out.numpy())
    return out.reshape(d.shape[:-1] + (degree * degree,))


def sh_colors(sh_degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """The fast path of :func:`fieldforge.render.rasterize.sh_colors` for float32 CPU tensors
    with ``dirs`` [..., 3] and ``coeffs`` [..., K, 3] of the same leading shape (checked by the
    caller), sh_degree 0..4."""
    lead = dirs.shape[:-1]
    out = _SHColors.apply(sh_degree, dirs.reshape(-1, 3), coeffs.reshape(-1, coeffs.shape[-2], 3))
    return out.reshape(lead + (3,))
