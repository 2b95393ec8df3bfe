"""FreSh (Kania et al., ICLR 2025): choose an embedding hyper-parameter before training.

For each candidate, the *untrained* model's output on the full coordinate grid is summarised by
a spectrum and compared with the target's spectrum by the 1-D Wasserstein-1 distance (only the
spectrum's shape matters); the candidate with the smallest mean distance over ``n_seeds``
initialisations is chosen. Spectrum of an image y [C, H, W] (as the authors' reference code computes it):
resize to a square of side min(H, W, 1024) if needed (antialiased), F = sum_c |FFT2(y_c)|
(unshifted), spectrum[m] = sum over kx, ky >= 0 with kx + ky = m of F[ky, kx], for m = 1..S
(DC dropped, first quadrant only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def image_spectrum(y: Tensor, size: int = 64) -> Tensor:
    """FreSh spectrum [size] (float64) of an image ``y`` [C, H, W]."""
    if y.ndim != 3:
        raise ValueError(f"image_spectrum: expected [C, H, W], got {tuple(y.shape)}")
    c, h, w = y.shape
    side = min(h, w, 1024)
    if (h, w) != (side, side):
        y = F.interpolate(y[None].double(), size=(side, side), mode="bilinear", antialias=True,
                          align_corners=False)[0]
    if not 1 <= size <= side // 2:
        raise ValueError(f"image_spectrum: size must be in 1..{side // 2} for a {side}^2 image, got {size}")
    mag = torch.fft.fft2(y.double()).abs().sum(0)[: size + 1, : size + 1]  # [ky, kx], first quadrant
    m = torch.arange(size + 1)
    diag = (m[:, None] + m[None, :]).reshape(-1)
    spec = torch.zeros(2 * size + 1, dtype=torch.float64).index_add_(0, diag, mag.reshape(-1))
    return spec[1: size + 1]


def spectrum_distance(a: Tensor, b: Tensor) -> float:
    """Wasserstein-1 distance between two spectra as weights on {0, ..., S-1}."""
    support = np.arange(a.shape[0])
    from scipy.stats import wasserstein_distance  # scipy.stats takes 0.2 s to import: only when used

    return float(wasserstein_distance(support, support, a.cpu().numpy(), b.cpu().numpy()))


@dataclass
class FreshResult:
    chosen: Any  # the selected candidate
    distances: list[float]  # mean distance per candidate, in candidate order
    seconds: float  # wall time of the whole selection
    spectra: list[Tensor] = field(repr=False, default_factory=list)  # mean model spectrum per candidate


@torch.no_grad()
def select(model_factory: Callable[[Any, int], nn.Module], candidates: Sequence[Any], coords: Tensor,
           target: Tensor, n_seeds: int = 10, spectrum_size: int = 64) -> FreshResult:
    """Pick the candidate whose untrained models' spectra are nearest the target's.

    ``model_factory(candidate, seed)`` returns a fresh model mapping ``coords`` [H, W, in] to
    [H, W, C]; ``target`` is [H, W, C]. Distances are averaged over seeds 0..n_seeds-1.
    """
    if not candidates:
        raise ValueError("fresh.select: no candidates")
    if n_seeds < 1:
        raise ValueError(f"fresh.select: n_seeds must be >= 1, got {n_seeds}")
    if target.ndim != 3 or coords.shape[:2] != target.shape[:2]:
        raise ValueError(f"fresh.select: coords {tuple(coords.shape)} and target {tuple(target.shape)} "
                         "must be [H, W, in] and [H, W, C]")
    t0 = time.perf_counter()
    ref = image_spectrum(target.permute(2, 0, 1), spectrum_size)
    distances, spectra = [], []
    for cand in candidates:
        specs = []
        for seed in range(n_seeds):
            out = model_factory(cand, seed)(coords)
            specs.append(image_spectrum(out.permute(2, 0, 1), spectrum_size))
        distances.append(float(np.mean([spectrum_distance(s, ref) for s in specs])))
        spectra.append(torch.stack(specs).mean(0))
    best = int(np.argmin(distances))
    return FreshResult(candidates[best], distances, time.perf_counter() - t0, spectra)
