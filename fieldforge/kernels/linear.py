"""Small MLPs with each layer's ReLU fused into it, where no gradient is needed (the fast path of
:class:`fieldforge.fields.mlp.MLP` when rendering and when the training passes prune samples).

The reference is ``torch.nn.functional.linear`` followed by an in-place ReLU, layer by layer over
all rows: the bias is first broadcast into each output, the matrix product accumulates onto it,
and the ReLU passes over it again. The fast path runs oneDNN's linear layer with the ReLU as a
post-op (``torch.ops.mkldnn._linear_pointwise``, the operator PyTorch's own CPU compiler emits
for this pattern), one pass per layer, on blocks of :data:`ROWS` rows that go through every layer
before the next block: the hidden activations of a block stay in cache, and every call has the
same shape (oneDNN builds, and caches, one primitive per shape; new shapes on every call cost
more than they save). The rows past the last full block take the reference.

Unlike the numba kernels it needs no compilation. It is taken for float32 CPU tensors when no
gradient is wanted (the operator has no derivative) and the PyTorch build has the operator,
unless ``FIELDFORGE_KERNELS=torch``. Results equal the reference's up to float32 rounding (the
library may block the sums of a product differently).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from fieldforge import kernels

ROWS = 4096

Layer = tuple[Tensor, Tensor | None]  # weight [out, in], bias [out]


def fused_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def enabled(x: Tensor, *params: Tensor) -> bool:
    """Whether :func:`mlp` takes the fast path for input ``x`` and these parameters."""
    tensors = (x, *params)
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and kernels.choice() != "torch" and fused_available())


def _layers(x: Tensor, hidden: Sequence[Layer], out: Layer, skips: tuple[int, ...], fused: bool) -> Tensor:
    h = x
    for i, (w, b) in enumerate(hidden):
        if i in skips:
            h = torch.cat([h, x], -1)
        h = torch.ops.mkldnn._linear_pointwise(h, w, b, "relu", [], "") if fused else torch.relu_(F.linear(h, w, b))
    return torch.ops.mkldnn._linear_pointwise(h, *out, "none", [], "") if fused else F.linear(h, *out)


def mlp(x: Tensor, hidden: Sequence[Layer], out: Layer, skips: tuple[int, ...] = ()) -> Tensor:
    """ReLU(... ReLU(x W_0^T + b_0) ...) W_out^T + b_out for x [..., in]; ``skips`` concatenate x
    to the input of the listed hidden layers. The fast path when :func:`enabled`, else the
    reference."""
    if not enabled(x, *[t for layer in (*hidden, out) for t in layer if t is not None]):
        return _layers(x, hidden, out, skips, fused=False)
    lead, flat = x.shape[:-1], x.reshape(-1, x.shape[-1])
    full = flat.shape[0] // ROWS * ROWS
    parts = [_layers(flat[s:s + ROWS], hidden, out, skips, fused=True) for s in range(0, full, ROWS)]
    parts.append(_layers(flat[full:], hidden, out, skips, fused=False))
    return torch.cat(parts).reshape(*lead, out[0].shape[0])
