"""``dynamic-splat``: GauFRe, dynamic Gaussian splatting with a deformation MLP and a static
cloud (GauFRe, arXiv:2312.11458), on top of the ``splat`` recipe.

- Clouds: with seed points (real scenes) the static cloud is the seed points and the dynamic
  cloud ``init_num_points`` uniform points in the scene bounds (the reference); without seed
  points both are uniform in the bounds, ``static_fraction`` of ``init_num_points`` static
  (deviation: the reference's synthetic runs have no static cloud; ``static_fraction=0``
  reproduces them). Nearest-neighbour scales are computed per cloud.
- Sizes: by default (0) ``init_num_points`` = min(10,000, 0.25 x the pixels of a training image)
  and ``cap_max`` = min(100,000, 2.5 x those pixels), a tenth of ``splat``'s, since every dynamic
  Gaussian passes through the deformation MLP at every step (deviation: the reference starts from
  100,000 points and a GPU).
- Warm-up: for ``step < warmup_steps`` nothing is deformed (a static 3DGS of the canonical
  Gaussians); afterwards dynamic Gaussians are deformed to each image's time.
- Loss: 0.8 L2 + 0.2 D-SSIM before ``l2_until``, 0.8 L1 + 0.2 D-SSIM after.
- The deformation MLP has its own Adam (never touched by densification), lr ``lr_deformation``
  decaying exponentially to ``lr_deformation_final`` x that at ``steps``.
- Densification (:class:`DefaultStrategy`) acts on both clouds with the screen-space gradient of
  the *deformed* means; clones and split children keep their parent's dynamic flag.
- Rendering uses the camera's time (``cameras.times``); a camera without time renders t = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fieldforge.apps.training.losses import splat_loss
from fieldforge.apps.training.methods.splat import SplatConfig, SplatMethod
from fieldforge.apps.training.plan import decayed, phase
from fieldforge.errors import FieldforgeError
from fieldforge.fields.deformation import DeformationMLP
from fieldforge.fields.dynamic_gaussians import DynamicGaussianModel
from fieldforge.scenes import Cameras, Scene


@dataclass
class DynamicSplatConfig(SplatConfig):
    steps: int = 40_000
    refine_stop_iter: int = 20_000
    static_fraction: float = 0.5
    warmup_steps: int = phase(3000)
    l2_until: int = phase(20_000)
    lr_deformation: float = 1e-2  # synthetic scenes (reference: 1e-3 for real ones)
    lr_deformation_final: float = 1e-3  # fraction of lr_deformation reached at ``steps``
    pos_freqs: int = 10
    time_freqs: int = 6
    deform_width: int = 256
    deform_depth: int = 6
    rotation: str = "reference"  # or "identity" (deviation: starts at the canonical rotation)


class DynamicSplatMethod(SplatMethod):
    name = "dynamic-splat"
    Config = DynamicSplatConfig
    # every dynamic Gaussian passes through the deformation MLP at every step: a tenth of splat's sizes
    init_per_pixel, init_ceiling = 0.25, 10_000
    cap_per_pixel, cap_ceiling = 2.5, 100_000

    def __init__(self, config: DynamicSplatConfig, scene: Scene, device: torch.device):
        if scene.times is None:
            raise FieldforgeError(f"dynamic-splat needs a scene with per-frame times (e.g. D-NeRF 'time'); "
                                  f"{scene.source} has none")
        if not 0.0 <= config.static_fraction <= 1.0:
            raise FieldforgeError(f"dynamic-splat: static_fraction must be in [0, 1], got {config.static_fraction}")
        super().__init__(config, scene, device)
        self.deform_optimizer = torch.optim.Adam(self.model.deformation.parameters(), lr=config.lr_deformation)

    def _init_model(self, cfg: DynamicSplatConfig, scene: Scene) -> DynamicGaussianModel:
        seeds = self._seed_points(cfg, scene)
        if seeds is not None:
            static, dynamic = seeds, self._uniform_points(scene, self.init_points)
        else:
            n_static = round(cfg.static_fraction * self.init_points)
            static = self._uniform_points(scene, n_static)
            dynamic = self._uniform_points(scene, self.init_points - n_static)
        deformation = DeformationMLP(cfg.pos_freqs, cfg.time_freqs, cfg.deform_width, cfg.deform_depth,
                                     rotation=cfg.rotation)
        return DynamicGaussianModel.from_clouds(self._cloud(cfg, *static), self._cloud(cfg, *dynamic), deformation)

    def _geometry(self, cameras: Cameras, i: int, step: int | None) -> tuple[Tensor, Tensor, Tensor]:
        if step is not None and step < self.config.warmup_steps:
            return self.model.geometry(None)
        t = 0.0 if cameras.times is None else float(cameras.times[i])
        return self.model.geometry(t)

    def _loss(self, pred: Tensor, target: Tensor, step: int) -> Tensor:
        return splat_loss(pred, target, self.config.ssim_lambda, "l2" if step < self.config.l2_until else "l1")

    def _step_optimizers(self, step: int) -> None:
        super()._step_optimizers(step)
        cfg = self.config
        self.deform_optimizer.param_groups[0]["lr"] = decayed(cfg.lr_deformation, cfg.lr_deformation_final, step,
                                                              cfg.steps)
        self.deform_optimizer.step()
        self.deform_optimizer.zero_grad(set_to_none=True)

    def state_dict(self, *args, **kwargs) -> dict:
        return {**super().state_dict(), "dynamic": self.model.dynamic.clone(),
                "deformation": {k: v.clone() for k, v in self.model.deformation.state_dict().items()},
                "deform_optimizer": self.deform_optimizer.state_dict()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        missing = {"dynamic", "deformation", "deform_optimizer"} - set(state)
        if missing:
            raise FieldforgeError(f"dynamic-splat checkpoint lacks {', '.join(sorted(missing))}")
        super().load_state_dict(state, strict)
        if len(state["dynamic"]) != len(self.model):
            raise FieldforgeError("dynamic-splat checkpoint: dynamic flags do not match the Gaussians")
        self.model.dynamic = state["dynamic"].to(self.device, torch.bool)
        self.model.deformation.load_state_dict(state["deformation"])
        self.deform_optimizer.load_state_dict(state["deform_optimizer"])
