"""Fused EWA projection of 3D Gaussians (forward and backward), numba CPU kernels.

Same semantics as the reference :func:`fieldforge.render.raster_project.project_gaussians`
(gsplat's ``fully_fused_projection``; EWA splatting as in "3D Gaussian Splatting for Real-Time
Radiance Field Rendering", arXiv:2308.04079): world-to-camera ``viewmats`` in OpenCV axes,
pinhole ``Ks`` in pixels, wxyz quaternions normalised here, activated scales in world units,
pixel centres at +0.5. Culled entries keep the reference's finite outputs (depth clamped to 1
outside (near, far), determinant 1 when not positive) and gradients, so the two paths agree on
every entry; ``radii`` is 0 for culled entries.

Parallel over Gaussians (each thread writes its own Gaussians' outputs and gradients, looping
over the cameras in order). The viewmat gradient is summed per fixed block of Gaussians and the
blocks are then added in order, so every result is independent of the thread count. Storage
is float32; the per-Gaussian arithmetic runs in float64.
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

ALPHA_THRESHOLD = np.float32(1.0 / 255.0)
MAX_EXTEND = np.float32(3.33)
QUAT_EPS = 1e-12  # F.normalize's eps
BLOCK = 1024  # Gaussians per viewmat-gradient partial sum (fixed: results independent of threads)


@jit
def _rotation(q):
    """Rotation matrix (row-major 9-tuple) of the normalised wxyz quaternion ``q``, with the
    normalised quaternion and the clamped norm."""
    norm = max(math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]), QUAT_EPS)
    w, x, y, z = q[0] / norm, q[1] / norm, q[2] / norm, q[3] / norm
    R = (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
         2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
         2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y))
    return R, (w, x, y, z), norm


@jit
def _mm(a, b):
    """a @ b for row-major 3x3 tuples."""
    return (a[0] * b[0] + a[1] * b[3] + a[2] * b[6], a[0] * b[1] + a[1] * b[4] + a[2] * b[7],
            a[0] * b[2] + a[1] * b[5] + a[2] * b[8],
            a[3] * b[0] + a[4] * b[3] + a[5] * b[6], a[3] * b[1] + a[4] * b[4] + a[5] * b[7],
            a[3] * b[2] + a[4] * b[5] + a[5] * b[8],
            a[6] * b[0] + a[7] * b[3] + a[8] * b[6], a[6] * b[1] + a[7] * b[4] + a[8] * b[7],
            a[6] * b[2] + a[7] * b[5] + a[8] * b[8])


@jit
def _add(a, b):
    """Elementwise sum of two 3x3 row-major tuples."""
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5],
            a[6] + b[6], a[7] + b[7], a[8] + b[8])


@jit
def _t(a):
    """Transpose of a row-major 3x3 tuple."""
    return (a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8])


@jit
def _covariance(q, s):
    """World covariance R diag(s)^2 R^T, with R, M = R diag(s) and the normalised quaternion."""
    R, qn, norm = _rotation((float(q[0]), float(q[1]), float(q[2]), float(q[3])))
    s = (float(s[0]), float(s[1]), float(s[2]))
    M = (R[0] * s[0], R[1] * s[1], R[2] * s[2], R[3] * s[0], R[4] * s[1], R[5] * s[2],
         R[6] * s[0], R[7] * s[1], R[8] * s[2])
    return _mm(M, _t(M)), R, M, s, qn, norm


@jit
def _camera(viewmats, Ks, c):
    """Camera c's rotation (9-tuple), translation and intrinsics (fx, fy, cx, cy)."""
    V = viewmats[c]
    Rv = (float(V[0, 0]), float(V[0, 1]), float(V[0, 2]), float(V[1, 0]), float(V[1, 1]), float(V[1, 2]),
          float(V[2, 0]), float(V[2, 1]), float(V[2, 2]))
    tv = (float(V[0, 3]), float(V[1, 3]), float(V[2, 3]))
    K = Ks[c]
    return Rv, tv, (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))


@jit
def _project_one(m, S, Rv, tv, K, width, height, eps2d, near, far):
    """Camera-space mean, clamped depth, clamp flags, Jacobian (j00, j02, j11, j12), camera
    covariance and the 2D covariance (a, b, c) with eps2d, as the reference computes them."""
    fx, fy, cx, cy = K
    mc = (Rv[0] * m[0] + Rv[1] * m[1] + Rv[2] * m[2] + tv[0],
          Rv[3] * m[0] + Rv[4] * m[1] + Rv[5] * m[2] + tv[1],
          Rv[6] * m[0] + Rv[7] * m[1] + Rv[8] * m[2] + tv[2])
    in_depth = near < mc[2] < far
    tz = mc[2] if in_depth else 1.0
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    xr, yr = mc[0] / tz, mc[1] / tz
    lo_x, hi_x = -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x
    lo_y, hi_y = -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y
    u, v = min(max(xr, lo_x), hi_x), min(max(yr, lo_y), hi_y)
    ux, vy = lo_x <= xr <= hi_x, lo_y <= yr <= hi_y  # where the clamps pass gradients
    J = (fx / tz, -fx * u / tz, fy / tz, -fy * v / tz)
    Cc = _mm(_mm(Rv, S), _t(Rv))
    # rows of J Cc for J = [[j00, 0, j02], [0, j11, j12]]
    P0 = (J[0] * Cc[0] + J[1] * Cc[6], J[0] * Cc[1] + J[1] * Cc[7], J[0] * Cc[2] + J[1] * Cc[8])
    P1 = (J[2] * Cc[3] + J[3] * Cc[6], J[2] * Cc[4] + J[3] * Cc[7], J[2] * Cc[5] + J[3] * Cc[8])
    a = J[0] * P0[0] + J[1] * P0[2] + eps2d
    c = J[2] * P1[1] + J[3] * P1[2] + eps2d
    b = 0.5 * ((J[2] * P0[1] + J[3] * P0[2]) + (J[0] * P1[0] + J[1] * P1[2]))
    return mc, tz, in_depth, ux, vy, u, v, J, Cc, P0, P1, a, b, c


@pjit
def _forward(means, quats, scales, viewmats, Ks, opac, has_opac, width, height, eps2d, near, far, radius_clip,
             radii, means2d, depths, conics):
    C, N = radii.shape[0], radii.shape[1]
    for n in prange(N):
        S = _covariance(quats[n], scales[n])[0]
        m = (float(means[n, 0]), float(means[n, 1]), float(means[n, 2]))
        for c in range(C):
            Rv, tv, K = _camera(viewmats, Ks, c)
            mc, tz, in_depth, _, _, _, _, _, _, _, _, a, b, cc = _project_one(
                m, S, Rv, tv, K, width, height, eps2d, near, far)
            det = a * cc - b * b
            ds = det if det > 0 else 1.0
            conics[c, n, 0], conics[c, n, 1], conics[c, n, 2] = cc / ds, -b / ds, a / ds
            mx, my = np.float32(K[0] * mc[0] / tz + K[2]), np.float32(K[1] * mc[1] / tz + K[3])
            means2d[c, n, 0], means2d[c, n, 1] = mx, my
            depths[c, n] = mc[2]
            extend = MAX_EXTEND
            valid = det > 0 and in_depth
            if has_opac:
                o = opac[c, n]
                valid = valid and o >= ALPHA_THRESHOLD
                extend = min(extend, np.sqrt(np.float32(2.0) * np.log(max(o / ALPHA_THRESHOLD, np.float32(1.0)))))
            rx = np.ceil(extend * np.sqrt(max(np.float32(a), np.float32(0.0))))
            ry = np.ceil(extend * np.sqrt(max(np.float32(cc), np.float32(0.0))))
            valid = (valid and not (rx <= radius_clip and ry <= radius_clip)
                     and mx + rx > 0 and mx - rx < width and my + ry > 0 and my - ry < height)
            radii[c, n, 0], radii[c, n, 1] = (int(rx), int(ry)) if valid else (0, 0)


@jit
def _rotation_vjp(qn, G):
    """Gradient w.r.t. the normalised wxyz quaternion of <G, R(qn)> (G row-major 3x3)."""
    w, x, y, z = qn
    gw = 2 * (-z * G[1] + y * G[2] + z * G[3] - x * G[5] - y * G[6] + x * G[7])
    gx = 2 * (y * G[1] + z * G[2] + y * G[3] - 2 * x * G[4] - w * G[5] + z * G[6] + w * G[7] - 2 * x * G[8])
    gy = 2 * (-2 * y * G[0] + x * G[1] + w * G[2] + x * G[3] + z * G[5] - w * G[6] + z * G[7] - 2 * y * G[8])
    gz = 2 * (-2 * z * G[0] - w * G[1] + x * G[2] + w * G[3] - 2 * z * G[4] + y * G[5] + x * G[6] + y * G[7])
    return gw, gx, gy, gz


@jit
def _add_view_grad(partial, blk, c, gRv, gmc, m):
    """partial[blk, c] (viewmat rows 0-2, row-major) += [2 gRv + gmc m^T | gmc], written out so
    that no tuple is indexed at run time."""
    P = partial[blk, c]
    P[0] += 2 * gRv[0] + gmc[0] * m[0]
    P[1] += 2 * gRv[1] + gmc[0] * m[1]
    P[2] += 2 * gRv[2] + gmc[0] * m[2]
    P[3] += gmc[0]
    P[4] += 2 * gRv[3] + gmc[1] * m[0]
    P[5] += 2 * gRv[4] + gmc[1] * m[1]
    P[6] += 2 * gRv[5] + gmc[1] * m[2]
    P[7] += gmc[1]
    P[8] += 2 * gRv[6] + gmc[2] * m[0]
    P[9] += 2 * gRv[7] + gmc[2] * m[1]
    P[10] += 2 * gRv[8] + gmc[2] * m[2]
    P[11] += gmc[2]


@pjit
def _backward(means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, g_means2d, g_depths, g_conics,
              g_means, g_quats, g_scales, g_view_partial):
    C, N = g_depths.shape[0], g_depths.shape[1]
    for blk in prange(g_view_partial.shape[0]):
        for n in range(blk * BLOCK, min(N, (blk + 1) * BLOCK)):
            S, R, M, s, qn, norm = _covariance(quats[n], scales[n])
            m = (float(means[n, 0]), float(means[n, 1]), float(means[n, 2]))
            gm = (0.0, 0.0, 0.0)
            GS = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            for c in range(C):
                Rv, tv, K = _camera(viewmats, Ks, c)
                fx, fy = K[0], K[1]
                mc, tz, in_depth, ux, vy, u, v, J, Cc, P0, P1, a, b, cc = _project_one(
                    m, S, Rv, tv, K, width, height, eps2d, near, far)
                # conics = (c, -b, a) / det, det = a c - b^2 (held at 1 when not positive)
                g0, g1, g2 = g_conics[c, n, 0], g_conics[c, n, 1], g_conics[c, n, 2]
                det = a * cc - b * b
                inv = 1.0 / det if det > 0 else 1.0
                gdet = -(g0 * cc - g1 * b + g2 * a) * inv * inv if det > 0 else 0.0
                ga, gb, gc = g2 * inv + gdet * cc, -g1 * inv - 2 * b * gdet, g0 * inv + gdet * a
                # 2D covariance J Cc J^T: gJ = 2 G2 (J Cc), gCc = J^T G2 J, G2 = [[ga, gb/2], [gb/2, gc]]
                hb = 0.5 * gb
                gJ00 = 2 * (ga * P0[0] + hb * P1[0])
                gJ02 = 2 * (ga * P0[2] + hb * P1[2])
                gJ11 = 2 * (hb * P0[1] + gc * P1[1])
                gJ12 = 2 * (hb * P0[2] + gc * P1[2])
                Q0 = (ga * J[0], hb * J[2], ga * J[1] + hb * J[3])  # row 0 of G2 J (columns 0, 1, 2)
                Q1 = (hb * J[0], gc * J[2], hb * J[1] + gc * J[3])
                GC = (J[0] * Q0[0], J[0] * Q0[1], J[0] * Q0[2],
                      J[2] * Q1[0], J[2] * Q1[1], J[2] * Q1[2],
                      J[1] * Q0[0] + J[3] * Q1[0], J[1] * Q0[1] + J[3] * Q1[1], J[1] * Q0[2] + J[3] * Q1[2])
                # Cc = Rv S Rv^T: gS += Rv^T GC Rv, gRv = 2 GC Rv S
                GS = _add(GS, _mm(_mm(_t(Rv), GC), Rv))
                gRv = _mm(_mm(GC, Rv), S)
                # Jacobian entries, the clamped tan u, v and the means2d to the camera-space mean
                gm0, gm1 = g_means2d[c, n, 0], g_means2d[c, n, 1]
                gu = -fx * gJ02 / tz if ux else 0.0
                gv = -fy * gJ12 / tz if vy else 0.0
                gx = (gu + gm0 * fx) / tz
                gy = (gv + gm1 * fy) / tz
                gtz = ((-fx * gJ00 + fx * u * gJ02 - fy * gJ11 + fy * v * gJ12) / (tz * tz)
                       - (gu + gm0 * fx) * mc[0] / (tz * tz) - (gv + gm1 * fy) * mc[1] / (tz * tz))
                gz = g_depths[c, n] + (gtz if in_depth else 0.0)
                # mc = Rv m + tv
                gm = (gm[0] + Rv[0] * gx + Rv[3] * gy + Rv[6] * gz,
                      gm[1] + Rv[1] * gx + Rv[4] * gy + Rv[7] * gz,
                      gm[2] + Rv[2] * gx + Rv[5] * gy + Rv[8] * gz)
                gmc = (gx, gy, gz)
                _add_view_grad(g_view_partial, blk, c, gRv, gmc, m)
            g_means[n, 0], g_means[n, 1], g_means[n, 2] = gm
            # S = M M^T, M = R diag(s): gM = (GS + GS^T) M
            GSs = _add(GS, _t(GS))
            gM = _mm(GSs, M)
            g_scales[n, 0] = gM[0] * R[0] + gM[3] * R[3] + gM[6] * R[6]
            g_scales[n, 1] = gM[1] * R[1] + gM[4] * R[4] + gM[7] * R[7]
            g_scales[n, 2] = gM[2] * R[2] + gM[5] * R[5] + gM[8] * R[8]
            GR = (gM[0] * s[0], gM[1] * s[1], gM[2] * s[2], gM[3] * s[0], gM[4] * s[1], gM[5] * s[2],
                  gM[6] * s[0], gM[7] * s[1], gM[8] * s[2])
            gq = _rotation_vjp(qn, GR)
            # normalisation q / max(|q|, eps)
            dot = (gq[0] * qn[0] + gq[1] * qn[1] + gq[2] * qn[2] + gq[3] * qn[3]) if norm > QUAT_EPS else 0.0
            g_quats[n, 0], g_quats[n, 1] = (gq[0] - qn[0] * dot) / norm, (gq[1] - qn[1] * dot) / norm
            g_quats[n, 2], g_quats[n, 3] = (gq[2] - qn[2] * dot) / norm, (gq[3] - qn[3] * dot) / norm


class _Project(torch.autograd.Function):
    """Autograd wrapper: differentiable w.r.t. means, quats, scales and viewmats."""

    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, opacities, width, height, eps2d, near, far, radius_clip):
        C, N = viewmats.shape[0], means.shape[0]
        f32 = torch.float32
        arrays = [kernels.as_array(t, f32, name, "project_gaussians") for name, t in
                  (("means", means), ("quats", quats), ("scales", scales), ("viewmats", viewmats), ("Ks", Ks))]
        opac = (torch.zeros(C, N) if opacities is None else opacities.detach().expand(C, N))
        radii = torch.empty(C, N, 2, dtype=torch.int32)
        means2d, depths, conics = torch.empty(C, N, 2), torch.empty(C, N), torch.empty(C, N, 3)
        kernels.call(_forward, *arrays, kernels.as_array(opac, f32, "opacities", "project_gaussians"),
                     opacities is not None, float(width), float(height), float(eps2d), float(near), float(far),
                     float(radius_clip), radii.numpy(), means2d.numpy(), depths.numpy(), conics.numpy())
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        ctx.config = (float(width), float(height), float(eps2d), float(near), float(far))
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics

    @staticmethod
    @once_differentiable
    def backward(ctx, _g_radii, g_means2d, g_depths, g_conics):
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        C, N = viewmats.shape[0], means.shape[0]
        g_means, g_quats, g_scales = torch.empty(N, 3), torch.empty(N, 4), torch.empty(N, 3)
        partial = np.zeros(((N + BLOCK - 1) // BLOCK, C, 12))
        arrays = [t.detach().contiguous().numpy() for t in (means, quats, scales, viewmats, Ks)]
        grads = [t.contiguous().numpy() for t in (g_means2d, g_depths, g_conics)]
        kernels.call(_backward, *arrays, *ctx.config, *grads, g_means.numpy(), g_quats.numpy(), g_scales.numpy(),
                     partial)
        g_view = torch.zeros(C, 4, 4)
        g_view[:, :3] = torch.from_numpy(partial.sum(0).reshape(C, 3, 4))  # fixed (numpy pairwise) order
        return (g_means, g_quats, g_scales, g_view, None, None, None, None, None, None,
                None, None)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int,
                      height: int, opacities: Tensor | None, eps2d: float, near_plane: float, far_plane: float,
                      radius_clip: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The fast path of :func:`fieldforge.render.raster_project.project_gaussians` for float32
    CPU tensors (shapes checked by the caller); no gradient flows to ``Ks`` or ``opacities``."""
    return _Project.apply(means, quats, scales, viewmats, Ks, opacities, width, height, eps2d, near_plane,
                          far_plane, radius_clip)
