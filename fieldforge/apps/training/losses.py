"""Image losses: L1, SSIM and D-SSIM in torch (differentiable, any device).

Images are [..., H, W, C] floats in [0, 1] (data range 1). SSIM uses an 11x11 Gaussian window
with sigma 1.5 and the constants C1 = 0.01^2, C2 = 0.03^2 (Wang et al. 2004, as in 3DGS).
``padding="same"`` zero-pads the window and averages over all pixels (the 3DGS training
loss); ``"valid"`` averages only where the window fits (scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def _window(size: int, sigma: float, dtype, device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, padding: str = "same") -> Tensor:
    """Mean SSIM of two [..., H, W, C] images (mean over batch, pixels and channels)."""
    if pred.shape != target.shape or pred.ndim < 3:
        raise ValueError(f"ssim: images must be [..., H, W, C] of equal shape, got {list(pred.shape)}, {list(target.shape)}")
    if padding not in ("same", "valid"):
        raise ValueError(f"ssim: padding must be 'same' or 'valid', got {padding!r}")
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    g = _window(window, sigma, x.dtype, x.device)
    pad = window // 2 if padding == "same" else 0

    def blur(t: Tensor) -> Tensor:
        t = F.conv2d(t, g.reshape(1, 1, 1, -1), padding=(0, pad))
        return F.conv2d(t, g.reshape(1, 1, -1, 1), padding=(pad, 0))

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def d_ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Structural dissimilarity 1 - SSIM (3DGS convention, not halved)."""
    return 1.0 - ssim(pred, target)


def l2(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target) ** 2).mean()


def splat_loss(pred: Tensor, target: Tensor, ssim_lambda: float = 0.2, photo: str = "l1") -> Tensor:
    """(1 - lambda) L_photo + lambda (1 - SSIM): the 3DGS / gsplat loss with ``photo="l1"``;
    GauFRe uses ``"l2"`` early in training."""
    return (1 - ssim_lambda) * {"l1": l1, "l2": l2}[photo](pred, target) + ssim_lambda * d_ssim(pred, target)
