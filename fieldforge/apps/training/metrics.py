"""Image metrics with a stated protocol.

PSNR = -10 log10(MSE) on linear RGB in [0, 1] (no clipping beyond [0, 1] of the render).
SSIM: scikit-image ``structural_similarity`` with an 11x11 Gaussian window of sigma 1.5,
population covariance, data range 1 (the NeRF/3DGS convention), averaged over channels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

PROTOCOL = {"psnr": "-10*log10(mse), rgb in [0,1]",
            "ssim": "skimage, gaussian window sigma 1.5, population covariance, data_range 1"}


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    mse = float(torch.mean((pred.clamp(0, 1).double() - gt.double()) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> float:
    a = pred.clamp(0, 1).detach().cpu().numpy().astype(np.float64)
    b = gt.detach().cpu().numpy().astype(np.float64)
    from skimage.metrics import structural_similarity  # scikit-image takes 0.2 s to import

    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))
