"""3D Gaussian splatting rasterizer with gsplat's ``rasterization`` interface.

Pipeline per camera, gsplat's forward model ("3D Gaussian Splatting for Real-Time Radiance Field
Rendering", arXiv:2308.04079; "gsplat: An Open-Source Library for Gaussian Splatting",
arXiv:2409.06765): EWA projection (:mod:`raster_project`), view-dependent SH colour (+0.5, clamped at 0), tile
binning and per-tile depth sort (:mod:`raster_tiles`), front-to-back compositing with a
custom backward (:mod:`raster_composite`). Conventions: world-to-camera ``viewmats`` in OpenCV
axes, pixel centres at +0.5, quaternions wxyz, ``scales`` and ``opacities`` already activated,
colours linear. Every stage is pure PyTorch (the reference) or, for float32 CPU tensors, a fused
kernel of :mod:`fieldforge.kernels` with the same results. On CUDA tensors with gsplat
importable, the call is forwarded to ``gsplat.rasterization`` (which caps alpha at 0.999 in
gsplat 1.5 instead of 0.99).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fieldforge import kernels
from fieldforge.encoders.sh import sh_basis
from fieldforge.fields.gaussians import GaussianModel
from fieldforge.render.raster_composite import composite_tiles
from fieldforge.render.raster_project import project_gaussians
from fieldforge.render.raster_tiles import bin_tiles

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def sh_colors(sh_degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour [..., 3] = max(sum_k coeffs[..., k, :] Y_k(dirs) + 0.5, 0) over the first
    (sh_degree + 1)^2 bases, sh_degree 0..4; ``dirs`` [..., 3] need not be unit length.
    Float32 CPU tensors with equal leading shapes take the kernel of :mod:`fieldforge.kernels.sh`."""
    if not 0 <= sh_degree <= 4:
        raise ValueError(f"sh_colors: sh_degree must be in 0..4, got {sh_degree}")
    if dirs.shape[-1:] != (3,):
        raise ValueError(f"sh_colors: dirs must be [..., 3], got {list(dirs.shape)}")
    if coeffs.ndim < 2 or coeffs.shape[-1] != 3 or coeffs.shape[-2] < (sh_degree + 1) ** 2:
        raise ValueError(f"sh_colors: coeffs must be [..., K, 3] with K >= {(sh_degree + 1) ** 2}, "
                         f"got {list(coeffs.shape)}")
    if (kernels.enabled(dirs, coeffs) and dirs.dtype == coeffs.dtype == torch.float32
            and dirs.shape[:-1] == coeffs.shape[:-2]):
        try:
            from fieldforge.kernels import sh
            return sh.sh_colors(sh_degree, dirs, coeffs)
        except kernels.Unavailable:
            pass
    basis = sh_basis(F.normalize(dirs, dim=-1), sh_degree + 1)
    return torch.clamp_min(torch.einsum("...k,...kc->...c", basis, coeffs[..., : basis.shape[-1], :]) + 0.5, 0.0)


def _check(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode):
    n = means.shape[0]
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"rasterize: means must be [N, 3], got {tuple(means.shape)}")
    for name, t, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3)), ("opacities", opacities, (n,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"rasterize: {name} must be {list(shape)}, got {list(t.shape)}")
    c = viewmats.shape[0] if viewmats.ndim == 3 else -1
    if viewmats.shape != (c, 4, 4) or Ks.shape != (c, 3, 3):
        raise ValueError(f"rasterize: viewmats must be [C, 4, 4] and Ks [C, 3, 3], got {list(viewmats.shape)}, {list(Ks.shape)}")
    if sh_degree is None:
        if not (colors.ndim == 2 and colors.shape[0] == n) and not (colors.ndim == 3 and colors.shape[:2] == (c, n)):
            raise ValueError(f"rasterize: colors must be [N, D] or [C, N, D] without sh_degree, got {list(colors.shape)}")
    elif colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or (sh_degree + 1) ** 2 > colors.shape[1]:
        raise ValueError(f"rasterize: SH colors must be [N, K, 3] with K >= (sh_degree + 1)^2 = "
                         f"{(sh_degree + 1) ** 2}, got {list(colors.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"rasterize: width and height must be positive, got {width}x{height}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"rasterize: render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if backgrounds is not None and backgrounds.shape[0] != c:
        raise ValueError(f"rasterize: backgrounds must be [C, D], got {list(backgrounds.shape)}")


def rasterize(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, sh_degree: int | None = None,
    backgrounds: Tensor | None = None, render_mode: str = "RGB", near_plane: float = 0.01,
    far_plane: float = 1e10, eps2d: float = 0.3, radius_clip: float = 0.0, tile_size: int | None = None,
    slots: int = 32, max_block: int = 1 << 21,
) -> tuple[Tensor, Tensor, dict]:
    """Render N Gaussians into C cameras.

    Args: ``means`` [N, 3], ``quats`` [N, 4] wxyz, ``scales`` [N, 3] and ``opacities`` [N]
    (activated), ``colors`` [N, D] or [C, N, D], or SH coefficients [N, K, 3] with
    ``sh_degree``; ``viewmats`` [C, 4, 4] world-to-camera, ``Ks`` [C, 3, 3]; ``backgrounds``
    [C, D] (colour channels only; depth channels composite onto 0). ``render_mode``: "RGB",
    "D" (accumulated depth sum w z), "ED" (expected depth, divided by alpha), "RGB+D", "RGB+ED".
    ``tile_size``: None = 16 for gsplat on CUDA and for the fast CPU kernels
    (:mod:`fieldforge.kernels`), 4 for the PyTorch CPU compositor (which is several times faster
    with small tiles); the image does not depend on it, the order is per-tile depth.
    ``slots`` and ``max_block`` set the compositor's batch size and memory bound.

    Returns ``colors`` [C, H, W, X], ``alphas`` [C, H, W, 1] and ``meta`` with ``radii``
    [C, N, 2], ``means2d`` [C, N, 2] (a graph tensor: call ``retain_grad()`` on it before
    backward for screen-space gradients), ``depths`` [C, N], ``conics`` [C, N, 3],
    ``n_isects`` [C] and ``width``, ``height``, ``tile_size``.
    Differentiable w.r.t. means, quats, scales, opacities, colors, backgrounds and viewmats.
    """
    width, height = int(width), int(height)
    _check(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode)
    if means.is_cuda:
        try:
            import gsplat
        except ImportError:
            pass
        else:
            return gsplat.rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                        sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode,
                                        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
                                        radius_clip=radius_clip, tile_size=tile_size or 16)
    fast = kernels.enabled(means)
    tile_size = tile_size or (16 if fast else 4)
    radii, means2d, depths, conics = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, opacities=opacities, eps2d=eps2d,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip)
    campos = torch.linalg.inv(viewmats)[:, :3, 3] if sh_degree is not None else None
    out_rgb, out_alpha, n_isects = [], [], []
    for c in range(viewmats.shape[0]):
        # the fast kernels skip culled Gaussians themselves: no gather here, no scatter in backward
        vis = slice(None) if fast else torch.nonzero((radii[c] > 0).all(-1)).squeeze(1)
        if sh_degree is not None:
            col = sh_colors(sh_degree, means[vis] - campos[c], colors[vis])
        else:
            col = (colors[c] if colors.ndim == 3 else colors)[vis]
        bg = backgrounds[c] if backgrounds is not None else col.new_zeros(col.shape[-1])
        if render_mode in ("D", "ED"):
            col, bg = depths[c, vis, None], bg.new_zeros(1)
        elif render_mode in ("RGB+D", "RGB+ED"):
            col, bg = torch.cat([col, depths[c, vis, None]], -1), torch.cat([bg, bg.new_zeros(1)])
        bins = bin_tiles(means2d[c, vis], radii[c, vis], depths[c, vis], width, height, tile_size)
        rgb, alpha = composite_tiles(means2d[c, vis], conics[c, vis], opacities[vis], col, bg, bins,
                                     width, height, slots=slots, max_block=max_block)
        out_rgb.append(rgb)
        out_alpha.append(alpha)
        n_isects.append(bins.ids.numel())
    render, alphas = torch.stack(out_rgb), torch.stack(out_alpha)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp_min(1e-10)], -1)
    meta = {"radii": radii, "means2d": means2d, "depths": depths, "conics": conics,
            "n_isects": torch.tensor(n_isects), "width": width, "height": height, "tile_size": tile_size}
    return render, alphas, meta


def render_gaussians(model: GaussianModel, viewmats: Tensor, Ks: Tensor, width: int, height: int,
                     sh_degree: int | None = None, backgrounds: Tensor | None = None, render_mode: str = "RGB",
                     geometry: tuple[Tensor, Tensor, Tensor] | None = None, **kwargs):
    """:func:`rasterize` of a :class:`~fieldforge.fields.gaussians.GaussianModel` with its
    activated parameters; ``sh_degree`` (None = the model's) may be lower during training.
    ``geometry`` = (means, log-scales, quats) replaces the stored ones (e.g. Gaussians deformed
    to a time)."""
    degree = model.sh_degree if sh_degree is None else sh_degree
    means, log_scales, quats = geometry if geometry is not None else (model.means, model.scales, model.quats)
    return rasterize(means, quats, torch.exp(log_scales), model.activated_opacities(), model.sh(),
                     viewmats, Ks, width, height, sh_degree=degree, backgrounds=backgrounds,
                     render_mode=render_mode, **kwargs)
