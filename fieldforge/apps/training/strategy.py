"""Densification strategies for Gaussian splats (swappable: the method only calls the interface).

:class:`DefaultStrategy` follows gsplat's ``DefaultStrategy`` defaults (gsplat, arXiv:2409.06765):
grow where the view-averaged screen-space mean gradient, rescaled by (W/2, H/2) and the number
of cameras, exceeds ``grow_grad2d`` (clone if max scale <= grow_scale3d x scene_scale, else split
into 2 children sampled from N(mu, Sigma) with scale / 1.6); prune opacity < ``prune_opa`` and,
after the first reset, max scale > prune_scale3d x scene_scale; every ``reset_every`` steps clamp
opacities to <= 2 prune_opa. ``cap_max`` bounds the number of Gaussians (the highest-gradient
candidates win). Adam moments are sliced for kept Gaussians and zeroed for new ones.

Interface (:class:`Strategy`): ``init_state(n) -> dict``, ``check_sanity(model, optimizers)``,
``step_pre_backward(model, optimizers, state, step, info)`` and ``step_post_backward(model,
optimizers, state, step, info, scene_scale, generator)``, with ``info`` the rasterizer ``meta``
plus ``n_cameras``. Parameter surgery (replacing parameters together with their Adam moments)
is :mod:`fieldforge.apps.training.surgery`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fieldforge.apps.training.surgery import edit_params
from fieldforge.fields.gaussians import GaussianModel
from fieldforge.render.raster_project import quat_to_rotmat


class Strategy:
    """Base of the densification strategies (the shape of gsplat's ``Strategy``). The method
    calls :meth:`check_sanity` once after building its optimisers, :meth:`step_pre_backward`
    after rendering and before ``loss.backward()``, and :meth:`step_post_backward` after the
    optimiser step; ``state`` is the strategy's running statistics (:meth:`init_state`)."""

    def init_state(self, n: int) -> dict[str, Tensor]:
        """Statistics for ``n`` Gaussians."""
        return {}

    def check_sanity(self, model: GaussianModel, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Every learned per-Gaussian parameter needs its own optimiser (surgery edits both)."""
        missing = sorted(set(model.params()) - set(optimizers))
        if missing:
            raise ValueError(f"{type(self).__name__}: no optimizer for parameter(s) {', '.join(missing)}")

    def step_pre_backward(self, model: GaussianModel, optimizers: dict, state: dict, step: int, info: dict) -> None:
        """Before the backward pass: keep the screen-space means' gradient (``info["means2d"]``)."""
        info["means2d"].retain_grad()

    def step_post_backward(self, model: GaussianModel, optimizers: dict, state: dict, step: int, info: dict,
                           scene_scale: float, generator: torch.Generator | None = None) -> dict[str, int]:
        """After the optimiser step: refine ``model``; returns counts of what was done."""
        raise NotImplementedError


@dataclass
class DefaultStrategy(Strategy):
    prune_opa: float = 0.005
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    refine_every: int = 100
    reset_every: int = 3000
    cap_max: int = 1_000_000

    def init_state(self, n: int) -> dict[str, Tensor]:
        return {"grad2d": torch.zeros(n), "count": torch.zeros(n)}

    @torch.no_grad()
    def step_post_backward(self, model: GaussianModel, optimizers: dict, state: dict, step: int, info: dict,
                           scene_scale: float, generator: torch.Generator | None = None) -> dict[str, int]:
        """Accumulate statistics and refine; returns counts of what was done this step."""
        if step >= self.refine_stop_iter:
            return {}
        self._accumulate(state, info)
        done = {}
        if step > self.refine_start_iter and step % self.refine_every == 0:
            done.update(self._grow(model, optimizers, state, scene_scale, generator))
            done["pruned"] = self._prune(model, optimizers, step, scene_scale)
            state.update(self.init_state(len(model)))
        if step % self.reset_every == 0 and step > 0:
            limit = math.log(2 * self.prune_opa / (1 - 2 * self.prune_opa))
            self._reset_opacity(model, optimizers, limit)
        return done

    def _accumulate(self, state: dict, info: dict) -> None:
        grad = info["means2d"].grad  # [C, N, 2] pixels
        if grad is None:
            raise ValueError("DefaultStrategy: meta['means2d'] has no gradient; call retain_grad() before backward")
        grad = grad.detach().clone()
        grad[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grad[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        visible = (info["radii"] > 0).all(-1)  # [C, N]
        state["grad2d"] += (grad.norm(dim=-1) * visible).sum(0).cpu()
        state["count"] += visible.sum(0).float().cpu()

    def _grow(self, model, optimizers, state, scene_scale, generator) -> dict[str, int]:
        n = len(model)
        avg = state["grad2d"] / state["count"].clamp_min(1)
        high = avg > self.grow_grad2d
        small = torch.exp(model.scales.detach()).amax(-1).cpu() <= self.grow_scale3d * scene_scale
        budget = max(self.cap_max - n, 0)
        if int(high.sum()) > budget:  # keep the highest-gradient candidates under the cap
            keep = torch.zeros_like(high)
            keep[torch.argsort(torch.where(high, avg, -1.0), descending=True)[:budget]] = True
            high &= keep
        dup, split = high & small, high & ~small
        dev = model.means.device
        if dup.any():
            idx = torch.nonzero(dup).squeeze(1).to(dev)
            edit_params(model, optimizers, lambda name, p: torch.cat([p, p[idx]]),
                        lambda v: torch.cat([v, v.new_zeros((len(idx),) + v.shape[1:])]))
        if split.any():
            sel = torch.cat([split, torch.zeros(int(dup.sum()), dtype=torch.bool)]).to(dev)
            self._split(model, optimizers, sel, generator)
        return {"duplicated": int(dup.sum()), "split": int(split.sum())}

    def _split(self, model, optimizers, sel: Tensor, generator) -> None:
        idx, rest = torch.nonzero(sel).squeeze(1), torch.nonzero(~sel).squeeze(1)
        scales = torch.exp(model.scales.detach()[idx])
        rot = quat_to_rotmat(model.quats.detach()[idx])
        eps = torch.randn(2, len(idx), 3, generator=generator).to(scales)
        offsets = torch.einsum("nij,nj,bnj->bni", rot, scales, eps).reshape(-1, 3)

        def child(name: str, p: Tensor) -> Tensor:
            if name == "means":
                kids = p[idx].repeat(2, 1) + offsets
            elif name == "scales":
                kids = torch.log(scales / 1.6).repeat(2, 1)
            else:
                kids = p[idx].repeat((2,) + (1,) * (p.ndim - 1))
            return torch.cat([p[rest], kids])

        edit_params(model, optimizers, child,
                    lambda v: torch.cat([v[rest], v.new_zeros((2 * len(idx),) + v.shape[1:])]))

    def _prune(self, model, optimizers, step: int, scene_scale: float) -> int:
        bad = torch.sigmoid(model.opacities.detach()) < self.prune_opa
        if step > self.reset_every:
            bad |= torch.exp(model.scales.detach()).amax(-1) > self.prune_scale3d * scene_scale
        if bad.any():
            keep = torch.nonzero(~bad).squeeze(1)
            edit_params(model, optimizers, lambda name, p: p[keep], lambda v: v[keep])
        return int(bad.sum())

    def _reset_opacity(self, model, optimizers, limit: float) -> None:
        p = model.opacities
        p.data.clamp_(max=limit)
        for v in optimizers["opacities"].state.get(p, {}).values():
            if torch.is_tensor(v) and v.ndim > 0:
                v.zero_()
