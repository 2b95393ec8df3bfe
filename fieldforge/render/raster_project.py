"""EWA projection of 3D Gaussians to screen space, as gsplat's ``fully_fused_projection``.

Conventions: ``viewmats`` are world-to-camera 4x4 in OpenCV axes (x right, y down, z forward);
``Ks`` are pinhole intrinsics in pixels; quaternions are wxyz (normalised here); ``scales``
are activated (positive, world units). Screen coordinates put the image's top-left corner at
(0, 0) and pixel (i, j)'s centre at (i + 0.5, j + 0.5). ``conics`` hold the upper triangle
(a, b, c) of the inverse 2D covariance, so a pixel offset (dx, dy) has Mahalanobis exponent
0.5 * (a dx^2 + c dy^2) + b dx dy. Everything is differentiable by autograd (also w.r.t.
``viewmats``) except the integer ``radii``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fieldforge import kernels

ALPHA_THRESHOLD = 1.0 / 255.0  # contributions below this alpha are skipped
MAX_EXTEND = 3.33  # bounding-box half-width in standard deviations (gsplat)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from (unnormalised) wxyz quaternions [..., 4]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1)
    return R.reshape(quats.shape[:-1] + (3, 3))


def covariance3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances Sigma = R diag(s) diag(s) R^T [N, 3, 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def _check(means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor,
           opacities: Tensor | None) -> None:
    """ValueError naming the first argument whose shape does not fit N Gaussians and C cameras."""
    n = means.shape[0] if means.ndim == 2 else -1
    c = viewmats.shape[0] if viewmats.ndim == 3 else -1
    for name, t, shape, text in (("means", means, (n, 3), "[N, 3]"), ("quats", quats, (n, 4), "[N, 4]"),
                                 ("scales", scales, (n, 3), "[N, 3]"), ("viewmats", viewmats, (c, 4, 4), "[C, 4, 4]"),
                                 ("Ks", Ks, (c, 3, 3), "[C, 3, 3]")):
        if tuple(t.shape) != shape or not t.is_floating_point():
            raise ValueError(f"project_gaussians: {name} must be a float tensor {text}, got {t.dtype} {list(t.shape)}")
    if opacities is not None and tuple(opacities.shape) not in ((n,), (c, n)):
        raise ValueError(f"project_gaussians: opacities must be [N] or [C, N], got {list(opacities.shape)}")


def project_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
    opacities: Tensor | None = None, eps2d: float = 0.3, near_plane: float = 0.01, far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Project N Gaussians into C cameras.

    Returns ``radii`` [C, N, 2] int32 (0 = culled), ``means2d`` [C, N, 2] pixels, ``depths``
    [C, N] camera-space z and ``conics`` [C, N, 3]. With ``opacities`` the box half-width is
    opacity-aware, min(3.33, sqrt(2 ln(255 o))) standard deviations, and Gaussians with
    o < 1/255 are culled (gsplat's CUDA kernel); without, it is 3.33 (gsplat's torch reference).
    The Jacobian uses the camera-space mean clamped to 1.3x the field of view; ``means2d`` the
    unclamped mean. ``eps2d`` px^2 is added to the 2D covariance diagonal.

    Float32 CPU tensors take the fused kernel of :mod:`fieldforge.kernels.projection` (same
    outputs and gradients) unless ``Ks`` requires a gradient or ``FIELDFORGE_KERNELS=torch``.
    """
    _check(means, quats, scales, viewmats, Ks, opacities)
    tensors = (means, quats, scales, viewmats, Ks) + ((opacities,) if opacities is not None else ())
    if (kernels.enabled(*tensors) and all(t.dtype == torch.float32 for t in tensors)
            and not Ks.requires_grad):
        try:
            from fieldforge.kernels import projection
            return projection.project_gaussians(means, quats, scales, viewmats, Ks, width, height, opacities,
                                                eps2d, near_plane, far_plane, radius_clip)
        except kernels.Unavailable:
            pass
    Rv, tv = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", Rv, means) + tv[:, None, :]
    covars_c = Rv[:, None] @ covariance3d(quats, scales)[None] @ Rv.transpose(-1, -2)[:, None]
    tz = means_c[..., 2]
    in_depth = (tz > near_plane) & (tz < far_plane)
    tz = torch.where(in_depth, tz, torch.ones_like(tz))  # keeps culled entries finite (and their grads)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    u = (means_c[..., 0] / tz).clamp(-(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x)
    v = (means_c[..., 1] / tz).clamp(-(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zero, -fx * u / tz, zero, fy / tz, -fy * v / tz], -1).reshape(tz.shape + (2, 3))
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    c = cov2d[..., 1, 1] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det = a * c - b * b
    ok = det > 0
    det_safe = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * means_c[..., 0] / tz + cx, fy * means_c[..., 1] / tz + cy], -1)
    with torch.no_grad():
        valid = ok & in_depth
        extend = torch.full_like(det, MAX_EXTEND)
        if opacities is not None:
            o = opacities.detach().expand_as(det)
            valid &= o >= ALPHA_THRESHOLD
            extend = torch.minimum(extend, torch.sqrt(2.0 * torch.log((o / ALPHA_THRESHOLD).clamp_min(1.0))))
        radius = torch.stack([torch.ceil(extend * a.clamp_min(0).sqrt()),
                              torch.ceil(extend * c.clamp_min(0).sqrt())], -1)
        valid &= ~((radius[..., 0] <= radius_clip) & (radius[..., 1] <= radius_clip))
        m = means2d.detach()
        valid &= ((m[..., 0] + radius[..., 0] > 0) & (m[..., 0] - radius[..., 0] < width)
                  & (m[..., 1] + radius[..., 1] > 0) & (m[..., 1] - radius[..., 1] < height))
        radii = torch.where(valid[..., None], radius, torch.zeros_like(radius)).int()
    return radii, means2d, means_c[..., 2], conics
