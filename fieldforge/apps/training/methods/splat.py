"""``splat``: 3D Gaussian splatting trained with gsplat's reference recipe (arXiv:2409.06765).

Initialisation from the scene's seed points (``scene.points``/``point_colors``) or, without
them or with ``init="random"``, ``init_num_points`` uniform points with random colours in the
scene bounds. Loss (1 - 0.2) L1 + 0.2 D-SSIM on one training image per step (a fresh random
permutation of the images per epoch, from a generator stored in the state). Per-parameter
Adam (eps 1e-15) with the reference learning rates; the means' rate is 1.6e-4 x scene_scale
decaying exponentially to 1% at ``steps``. The active SH degree grows by one every
``sh_degree_interval`` steps. Densification is a swappable strategy (:mod:`strategy`).
With seed points and images without alpha (a real capture), ``background_points`` (default:
a tenth of the seed points, at least 1,000) are added on a sphere of radius 10 x scene_scale
around them, for the background the SfM points do not reach. Sizes follow the images: by
default (0) ``init_num_points`` = min(100,000, 2.5 x the pixels of a training image) and
``cap_max`` = min(1,000,000, 25 x those pixels), the reference values at 200 x 200 px and
proportionally fewer Gaussians for smaller images. Under a time budget longer than the recipe,
the means' learning-rate decay stretches to the planned horizon (:mod:`fieldforge.apps.training.plan`);
densification and the SH degree steps stay step counts: rescaled to a 10-minute horizon
(densification from step 66 to 1,992, a degree every 133 steps) they cost 5.4 dB on lego
200 px, because a random initialisation needs its first few hundred steps before pruning and
growth are meaningful and short runs keep gaining from densification to their end.
scene_scale = 1.1 x the largest camera distance from the cameras' centroid.
Training composites on the scene's background colour (or a random one per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fieldforge.apps.training.losses import splat_loss
from fieldforge.apps.training.methods.base import Method, MethodConfig
from fieldforge.apps.training.plan import decayed
from fieldforge.apps.training.strategy import DefaultStrategy, Strategy
from fieldforge.errors import FieldforgeError
from fieldforge.fields.gaussians import PARAM_NAMES, GaussianModel
from fieldforge.render.rasterize import render_gaussians
from fieldforge.scenes import Cameras, Scene, background_rgb


@dataclass
class SplatConfig(MethodConfig):
    steps: int = 30_000  # run length: horizon of the means' learning-rate decay
    sh_degree: int = 3
    sh_degree_interval: int = 1000
    ssim_lambda: float = 0.2
    init: str = "auto"  # "auto" (seed points if any, else random), "points", "random"
    init_num_points: int = 0  # random initial points; 0 = min(100k, 2.5 x pixels of an image)
    background_points: int = -1  # seed-point scenes: points on a far sphere for the background; -1 = auto
    init_opacity: float = 0.1
    init_scale: float = 1.0
    lr_means: float = 1.6e-4  # x scene_scale
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    refine_every: int = 100
    reset_every: int = 3000
    grow_grad2d: float = 2e-4
    prune_opa: float = 0.005
    cap_max: int = 0  # most Gaussians densification may reach; 0 = min(1M, 25 x pixels of an image)
    random_background: bool = False
    tile_size: int = 0  # rasterizer tile size in pixels; 0 = the rasterizer's default for the path taken


def scene_scale(cameras: Cameras) -> float:
    """1.1 x the maximum distance of the camera centres from their mean (gsplat)."""
    c = cameras.centers
    return 1.1 * float((c - c.mean(0)).norm(dim=-1).max().clamp_min(1e-6))


class SplatMethod(Method):
    name = "splat"
    Config = SplatConfig
    depth_kind = "z"
    #: automatic sizes (``init_num_points`` / ``cap_max`` = 0): Gaussians per pixel of a training image, and a ceiling
    init_per_pixel, init_ceiling = 2.5, 100_000
    cap_per_pixel, cap_ceiling = 25.0, 1_000_000

    def __init__(self, config: SplatConfig, scene: Scene, device: torch.device):
        super().__init__(config, scene, device)
        if config.init not in ("auto", "points", "random"):
            raise FieldforgeError(f"splat: init must be auto, points or random, got {config.init!r}")
        self.background = background_rgb(scene.background).to(device)
        self.images = [(img.float() / 255.0).to(device) for img in scene.images]  # [H, W, 3|4]
        self.masks = None if scene.masks is None else [m.to(device) for m in scene.masks]  # [H, W] True = use
        self.scene_scale = scene_scale(scene.cameras)
        pixels = sum(img.shape[0] * img.shape[1] for img in scene.images) / max(len(scene.images), 1)
        self.init_points = config.init_num_points or max(1, min(self.init_ceiling, round(self.init_per_pixel * pixels)))
        self.cap_max = config.cap_max or max(1, min(self.cap_ceiling, round(self.cap_per_pixel * pixels)))
        self.generator = torch.Generator().manual_seed(config.seed)
        self.order = torch.randperm(len(self.images), generator=self.generator)
        self.position = 0
        self.model = self._init_model(config, scene).to(device)
        self.on_plan()
        self.strategy_state = self.strategy.init_state(len(self.model))
        self._build_optimizers()

    @property
    def gaussians(self) -> GaussianModel:
        return self.model

    def on_plan(self) -> None:
        """The densification strategy with the (planned) config's schedule."""
        c = self.config
        self.strategy: Strategy = DefaultStrategy(
            prune_opa=c.prune_opa, grow_grad2d=c.grow_grad2d, refine_start_iter=c.refine_start_iter,
            refine_stop_iter=c.refine_stop_iter, refine_every=c.refine_every, reset_every=c.reset_every,
            cap_max=self.cap_max)

    def _init_model(self, cfg: SplatConfig, scene: Scene) -> GaussianModel:
        seeds = self._seed_points(cfg, scene)
        return self._cloud(cfg, *(seeds if seeds is not None else self._uniform_points(scene, self.init_points)))

    def _seed_points(self, cfg: SplatConfig, scene: Scene) -> tuple[Tensor, Tensor] | None:
        """The scene's seed points and colours in [0, 1] when ``cfg.init`` uses them, else None."""
        has_points = scene.points is not None and len(scene.points) > 0
        if cfg.init == "points" and not has_points:
            raise FieldforgeError(f"{self.name}: init=points but {scene.source} has no seed points")
        if not has_points or cfg.init == "random":
            return None
        pts = scene.points.float()
        rgb = scene.point_colors.float() / 255.0 if scene.point_colors is not None else torch.full_like(pts, 0.5)
        n_bg = cfg.background_points if cfg.background_points >= 0 else \
            (0 if scene.has_alpha else max(1000, len(pts) // 10))
        if n_bg:
            bg = self._sphere_points(pts, n_bg)
            pts, rgb = torch.cat([pts, bg]), torch.cat([rgb, torch.full_like(bg, 0.5)])
        return pts, rgb

    def _sphere_points(self, seeds: Tensor, n: int) -> Tensor:
        """``n`` points uniform on a sphere around the seed points' median, of radius 10 x
        scene_scale: a backdrop that densification shapes into the sky and far background the
        SfM points miss (as common 3DGS trainers do for real captures)."""
        d = torch.randn(n, 3, generator=self.generator)
        return seeds.median(0).values + 10.0 * self.scene_scale * d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def _uniform_points(self, scene: Scene, n: int) -> tuple[Tensor, Tensor]:
        """``n`` points uniform in the scene bounds with random colours (from the method's generator)."""
        lo, hi = scene.bounds[0].float(), scene.bounds[1].float()
        return lo + (hi - lo) * torch.rand(n, 3, generator=self.generator), torch.rand(n, 3, generator=self.generator)

    def _cloud(self, cfg: SplatConfig, pts: Tensor, rgb: Tensor) -> GaussianModel:
        return GaussianModel.from_points(pts, rgb, cfg.sh_degree, cfg.init_opacity, cfg.init_scale, self.generator)

    def _lrs(self) -> dict[str, float]:
        c = self.config
        return {"means": c.lr_means * self.scene_scale, "scales": c.lr_scales, "quats": c.lr_quats,
                "opacities": c.lr_opacities, "sh0": c.lr_sh0, "shN": c.lr_shN}

    def _build_optimizers(self) -> None:
        lrs = self._lrs()
        self.optimizers = {name: torch.optim.Adam([p], lr=lrs[name], eps=1e-15)
                           for name, p in self.model.params().items()}
        self.strategy.check_sanity(self.model, self.optimizers)

    def _viewmat(self, cameras: Cameras, i: int) -> tuple[Tensor, Tensor, int, int]:
        return (torch.linalg.inv(cameras.c2w[i])[None], cameras.K[i][None],
                int(cameras.width[i]), int(cameras.height[i]))

    def _next_image(self) -> int:
        if self.position >= len(self.order):
            self.order = torch.randperm(len(self.images), generator=self.generator)
            self.position = 0
        self.position += 1
        return int(self.order[self.position - 1])

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        i = self._next_image()
        viewmat, K, W, H = self._viewmat(self.train_cameras, i)
        bg = torch.rand(3, generator=self.generator).to(self.device) if cfg.random_background else self.background
        gt = self.images[i]
        if gt.shape[-1] == 4:  # straight alpha: composite onto this step's background
            gt = gt[..., :3] * gt[..., 3:] + bg * (1 - gt[..., 3:])
        degree = min(step // cfg.sh_degree_interval, cfg.sh_degree)
        img, alpha, meta = render_gaussians(self.model, viewmat, K, W, H, sh_degree=degree, backgrounds=bg[None],
                                             tile_size=cfg.tile_size or None, geometry=self._geometry(self.train_cameras, i, step))
        meta["n_cameras"] = 1
        self.strategy.step_pre_backward(self.model, self.optimizers, self.strategy_state, step, meta)
        if self.masks is not None:  # masked-out pixels take the render's own value: no loss, no gradient
            gt = torch.where(self.masks[i][..., None], gt, img[0].detach())
        loss = self._loss(img[0], gt, step)
        loss.backward()
        self._step_optimizers(step)
        self.strategy.step_post_backward(self.model, self.optimizers, self.strategy_state, step, meta,
                                         self.scene_scale, self.generator)
        with torch.no_grad():
            mse = float(((img[0].detach().clamp(0, 1) - gt) ** 2).mean())
        return {"loss": float(loss.detach()), "psnr": -10 * math.log10(max(mse, 1e-10)), "rays": W * H,
                "gaussians": len(self.model)}

    def _geometry(self, cameras: Cameras, i: int, step: int | None) -> tuple[Tensor, Tensor, Tensor] | None:
        """Gaussian geometry for camera ``i`` (None: the stored one); ``step`` None when rendering."""
        return None

    def _loss(self, pred: Tensor, target: Tensor, step: int) -> Tensor:
        return splat_loss(pred, target, self.config.ssim_lambda)

    def _step_optimizers(self, step: int) -> None:
        cfg = self.config
        self.optimizers["means"].param_groups[0]["lr"] = decayed(self._lrs()["means"], 0.01, step, cfg.steps)
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor) -> dict[str, Tensor]:
        cameras = cameras.to(self.device)
        viewmat, K, W, H = self._viewmat(cameras, 0)
        out, alpha, _ = render_gaussians(self.model, viewmat, K, W, H, backgrounds=background.to(self.device).reshape(1, 3),
                                          render_mode="RGB+ED", tile_size=self.config.tile_size or None,
                                          geometry=self._geometry(cameras, 0, None))
        return {"rgb": out[0, ..., :3].clamp(0, 1), "depth": out[0, ..., 3:], "opacity": alpha[0]}

    def state_dict(self, *args, **kwargs) -> dict:
        return {
            "params": {name: p.detach().clone() for name, p in self.model.params().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "strategy": {k: v.clone() for k, v in self.strategy_state.items()},
            "generator": self.generator.get_state(),
            "order": self.order.clone(),
            "position": self.position,
        }

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        missing = {"params", "optimizers", "strategy", "generator", "order", "position"} - set(state)
        if missing:
            raise FieldforgeError(f"splat checkpoint lacks {', '.join(sorted(missing))}")
        params = state["params"]
        if set(params) != set(PARAM_NAMES) or params["shN"].shape[1] != self.model.shN.shape[1]:
            raise FieldforgeError("splat checkpoint: parameters do not match this configuration (sh_degree?)")
        self.model.set_params({k: v.to(self.device) for k, v in params.items()})
        self._build_optimizers()
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.strategy_state = {k: v.clone() for k, v in state["strategy"].items()}
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.position = int(state["position"])
