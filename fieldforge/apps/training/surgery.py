"""Parameter surgery on Gaussian models: replace the per-Gaussian parameters (select, append,
split) together with their optimisers' per-Gaussian state, so that densification never leaves
an optimiser pointing at a parameter that is gone."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from fieldforge.fields.gaussians import GaussianModel


def edit_params(model: GaussianModel, optimizers: dict[str, torch.optim.Optimizer],
                param_fn: Callable[[str, Tensor], Tensor], state_fn: Callable[[Tensor], Tensor]) -> None:
    """Replace every parameter by ``param_fn(name, p)`` and each per-Gaussian optimizer state
    tensor (Adam moments) by ``state_fn(v)``, keeping optimizer and model in step. The model's
    non-learned per-Gaussian buffers (``model.PER_GAUSSIAN``) go through ``param_fn`` too."""
    for name in model.PER_GAUSSIAN:
        setattr(model, name, param_fn(name, getattr(model, name)))
    for name, p in model.params().items():
        new = nn.Parameter(param_fn(name, p.detach()))
        opt = optimizers[name]
        state = opt.state.pop(p, {})
        opt.state[new] = {k: (state_fn(v) if torch.is_tensor(v) and v.ndim > 0 else v) for k, v in state.items()}
        opt.param_groups[0]["params"] = [new]
        setattr(model, name, new)
