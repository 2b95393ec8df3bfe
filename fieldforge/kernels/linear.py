"""Small MLPs with each layer's ReLU fused into it (the fast path of
:class:`fieldforge.fields.mlp.MLP`, in rendering and in training).

The reference is ``torch.nn.functional.linear`` followed by an in-place ReLU, layer by layer over
all rows, differentiated by autograd: the bias is first broadcast into each output, the matrix
product accumulates onto it, the ReLU passes over it again, and each gradient pass runs over all
rows. The fast path runs oneDNN's linear layer with the ReLU as a post-op
(``torch.ops.mkldnn._linear_pointwise``, the operator PyTorch's own CPU compiler emits for this
pattern), one pass per layer, on blocks of :data:`ROWS` rows that go through every layer before
the next block: the hidden activations of a block stay in cache, and every call has the same
shape (oneDNN builds, and caches, one primitive per shape; new shapes on every call cost more
than they save). The rows past the last full block take the reference's operations. With
gradients, the backward (:class:`_Trained`) also goes block by block through all layers, adding
the blocks' weight and bias gradients in block order (deterministic).

Unlike the numba kernels it needs no compilation. It is taken for float32 CPU tensors when the
PyTorch build has the operator, unless ``FIELDFORGE_KERNELS=torch``. Results equal the
reference's up to float32 rounding (the library may block the sums of a product differently).
Only first derivatives are provided.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from fieldforge import kernels

ROWS = 4096

Layer = tuple[Tensor, Tensor | None]  # weight [out, in], bias [out]


def fused_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def enabled(x: Tensor, *params: Tensor) -> bool:
    """Whether :func:`mlp` takes the fast path for input ``x`` and these parameters."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, *params))
            and kernels.choice() != "torch" and fused_available())


def _layers(x: Tensor, hidden: Sequence[Layer], out: Layer, skips: tuple[int, ...], fused: bool,
            inputs: list[Tensor] | None = None) -> Tensor:
    """The MLP on the rows of ``x``; ``inputs``, if given, receives each layer's input."""
    h = x
    for i, (w, b) in enumerate(hidden):
        if i in skips:
            h = torch.cat([h, x], -1)
        if inputs is not None:
            inputs.append(h)
        h = torch.ops.mkldnn._linear_pointwise(h, w, b, "relu", [], "") if fused else torch.relu_(F.linear(h, w, b))
    if inputs is not None:
        inputs.append(h)
    return torch.ops.mkldnn._linear_pointwise(h, *out, "none", [], "") if fused else F.linear(h, *out)


def _blocks(n: int) -> list[tuple[int, int, bool]]:
    """(start, stop, fused) of the row blocks: full blocks of :data:`ROWS` fused, the rest not."""
    full = n // ROWS * ROWS
    return [(s, s + ROWS, True) for s in range(0, full, ROWS)] + [(full, n, False)]


class _Trained(torch.autograd.Function):
    """The MLP with first derivatives, block by block: the forward as without gradients, keeping
    each block's layer inputs; the backward takes one block at a time through all layers (its
    gradients stay in cache), adding its weight and bias gradients in block order."""

    @staticmethod
    def forward(ctx, x: Tensor, n_hidden: int, skips: tuple[int, ...], *params: Tensor | None) -> Tensor:
        layers = [(params[2 * i], params[2 * i + 1]) for i in range(n_hidden + 1)]
        ctx.blocks, ctx.inputs, ctx.skips, ctx.layers, ctx.in_dim = _blocks(x.shape[0]), [], skips, layers, x.shape[1]
        ctx.save_for_backward(x)  # (the blocks keep views of x: autograd's check of in-place changes)
        outs = []
        for s, e, fused in ctx.blocks:
            ctx.inputs.append([])
            outs.append(_layers(x[s:e], layers[:-1], layers[-1], skips, fused, ctx.inputs[-1]))
        return torch.cat(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        ctx.saved_tensors  # raises if x was changed in place since the forward
        layers, in_dim = ctx.layers, ctx.in_dim
        grads = [[torch.zeros_like(w), None if b is None else torch.zeros_like(b)] for w, b in layers]
        want_x = ctx.needs_input_grad[0]
        grad_x = grad.new_empty(grad.shape[0], in_dim) if want_x else None
        ones = grad.new_ones(ROWS)
        for (s, e, _), inputs in zip(ctx.blocks, ctx.inputs):
            g, extra = grad[s:e], []
            for i in reversed(range(len(layers))):
                grads[i][0].addmm_(g.T, inputs[i])
                if grads[i][1] is not None:
                    grads[i][1].addmv_(g.T, ones[:e - s])  # the column sums, by BLAS
                if i == 0 and not want_x:
                    break
                g = g @ layers[i][0]
                if i in ctx.skips:  # the input concatenated to this layer's
                    g, tail = g[:, :-in_dim], g[:, -in_dim:]
                    extra.append(tail)
                if i > 0:
                    g = torch.ops.aten.threshold_backward(g, inputs[i][:, :g.shape[1]], 0)
            if want_x:
                grad_x[s:e] = sum(extra, g)  # written while the block is in cache
        ctx.inputs = None
        return (grad_x, None, None, *[t for pair in grads for t in pair])


def mlp(x: Tensor, hidden: Sequence[Layer], out: Layer, skips: tuple[int, ...] = ()) -> Tensor:
    """ReLU(... ReLU(x W_0^T + b_0) ...) W_out^T + b_out for x [..., in]; ``skips`` concatenate x
    to the input of the listed hidden layers. The fast path when :func:`enabled`, else the
    reference; with gradients, the fast path's backward is :class:`_Trained`'s."""
    params = [t for layer in (*hidden, out) for t in layer]
    if not enabled(x, *[t for t in params if t is not None]):
        return _layers(x, hidden, out, skips, fused=False)
    lead, flat = x.shape[:-1], x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *params)):
        y = _Trained.apply(flat, len(hidden), tuple(skips), *params)
    else:
        y = torch.cat([_layers(flat[s:e], hidden, out, skips, fused) for s, e, fused in _blocks(flat.shape[0])])
    return y.reshape(*lead, out[0].shape[0])
