"""Shared base for coordinate encoders: declared input range and input checking.

Every encoder is an ``nn.Module`` with integer attributes ``in_dim`` and ``out_dim`` and a
class attribute ``input_range`` (lo, hi): the per-axis coordinate range its defaults assume.
``forward(x[..., in_dim]) -> [..., out_dim]`` (float32 unless stated).
"""

from __future__ import annotations

from torch import Tensor, nn


class Encoding(nn.Module):
    """Base class: holds ``in_dim``/``out_dim`` and validates the trailing input dimension."""

    input_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(self, in_dim: int):
        super().__init__()
        if int(in_dim) < 1:
            raise ValueError(f"{type(self).__name__}: in_dim must be >= 1, got {in_dim}")
        self.in_dim = int(in_dim)
        self.out_dim = 0

    def _check(self, x: Tensor) -> None:
        if x.ndim < 1 or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__}: expected input [..., {self.in_dim}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{type(self).__name__}: expected a floating-point input, got {x.dtype}")


def positive(name: str, value: float, who: str) -> float:
    """Return ``float(value)`` or raise a ValueError naming ``who.name`` when it is not > 0."""
    if not float(value) > 0:
        raise ValueError(f"{who}: {name} must be > 0, got {value}")
    return float(value)
