"""Field methods trained by ray marching: ``nerf`` and ``ngp`` (and the base of every field method).

One step: update the occupancy grid (every ``grid_every`` steps; each update evaluates
1/``grid_stride``^3 of the cells of nerfacc's rule, see
:meth:`~fieldforge.render.occupancy.OccupancyGrid.update`), draw a batch of random
training pixels (one torch.Generator, saved in the state), march, composite against the
training background, MSE loss, Adam step. The batch size adapts so that the number of
samples per step stays near ``target_samples`` (nerfacc's dynamic batch). Trained data-parallel
(``--nproc N``, :meth:`RadianceMethod.distribute`), each rank draws its share of that batch
with its own generator and the sample count steering the batch size is summed over the ranks.

Distillation (``teacher`` = a trained field run): the first ``distill_steps`` steps regress
the teacher's colour and alpha (see :mod:`fieldforge.apps.training.methods.teacher`) instead of the
images, after initialising the occupancy grid from the teacher's density; the remaining steps
fine-tune on the images as above.

Unbounded real captures (``unbounded``: "auto" = on for COLMAP, nerfstudio and LLFF scenes whose
images have no alpha, with a field that supports it): the scene's box (from the seed points) is
the foreground, the field contracts the rest of space around it (mip-NeRF 360's contraction,
arXiv:2111.12077) and every ray adds ``far_samples`` disparity-spaced samples past the box
(:mod:`fieldforge.render.far`); the occupancy grid stays on the foreground box, and samples of
alpha below ``alpha_thre`` (auto: 1e-2, nerfacc's setting for unbounded scenes) are skipped.

The loss may add mip-NeRF 360's distortion term (``distortion``: its weight; ngp's default is
0.01), which gathers each ray's weight into few samples: less fog and fewer floaters, so rays
terminate sooner when rendering (the README measures it on lego and the LLFF fern).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from fieldforge.apps.training import distributed
from fieldforge.apps.training.methods.base import Method, MethodConfig
from fieldforge.apps.training.methods.teacher import Teacher
from fieldforge.apps.training.plan import decayed, phase
from fieldforge.errors import FieldforgeError
from fieldforge.fields.base import Field
from fieldforge.render.marcher import render_camera, render_rays
from fieldforge.render.occupancy import OccupancyGrid
from fieldforge.render.volume import distortion
from fieldforge.scenes import Cameras, Scene, background_rgb
from fieldforge.scenes.rays import Rays, pixel_rays


@dataclasses.dataclass
class RadianceConfig(MethodConfig):
    steps: int = 3000
    lr: float = 1e-2
    lr_final_factor: float = 0.03  # exponential decay to lr * factor at the last step (``steps``)
    eps: float = 1e-15
    beta2: float = 0.999  # Adam's second-moment decay
    weight_decay: float = 0.0
    init_batch_rays: int = 1024
    max_batch_rays: int = 8192
    target_samples: int = 2**16
    steps_per_diagonal: int = 512  # render step size = aabb diagonal / this
    grid_resolution: int = 128
    grid_every: int = 16
    grid_warmup: int = 256  # steps during which every grid update visits every cell (a count, not a phase)
    grid_stride: int = 2  # each grid update evaluates 1/stride^3 of nerfacc's cells (1 = nerfacc's rule)
    occ_thre: float = 1e-2
    train_background: str = "random"  # random | white | black | scene (the scene's eval background)
    early_stop_eps: float = 1e-4
    alpha_thre: float = -1.0  # skip samples of lower alpha; -1 = auto: 1e-2 when unbounded (nerfacc's), else 0
    render_chunk: int = 65536  # rays per marching chunk of an image (about 16 bytes per candidate sample)
    unbounded: str = "auto"  # auto | on | off: contract space outside the scene box (real captures)
    far_samples: int = 32  # samples per ray beyond the box when unbounded
    distortion: float = 0.0  # weight of mip-NeRF 360's distortion loss (0 = off; ngp: 0.01)
    teacher: str = ""  # run directory of a trained field to distil from ("" = train from the images)
    distill_steps: int = phase(1000)  # steps of distillation before image fine-tuning (when a teacher is set)
    distill_batch: int = 2**14  # points per distillation step


class RadianceMethod(Method):
    """Base for fields rendered by the ray marcher. Subclasses implement :meth:`make_field`."""

    Config = RadianceConfig
    supports_unbounded: ClassVar[bool] = False  # the field can contract space (``make_field`` reads self.unbounded)
    supports_distributed = True
    distils = True

    @classmethod
    def with_teacher(cls, config: RadianceConfig, run: str, occupied: list[float]) -> RadianceConfig:
        return dataclasses.replace(config, teacher=run)

    @property
    def radiance_field(self) -> Field:
        return self.field

    def make_field(self, aabb: Tensor) -> Field:
        raise NotImplementedError

    def _is_unbounded(self, config: RadianceConfig, scene: Scene) -> bool:
        """Resolve ``config.unbounded`` for this scene and method."""
        if config.unbounded not in ("auto", "on", "off"):
            raise FieldforgeError(f"{self.name}: unbounded must be auto, on or off, got {config.unbounded!r}")
        if config.unbounded == "on" and not self.supports_unbounded:
            raise FieldforgeError(f"{self.name}: unbounded=on needs a field that contracts space (ngp)")
        if config.unbounded == "auto":
            return self.supports_unbounded and scene.format in ("colmap", "nerfstudio", "llff") and not scene.has_alpha
        return config.unbounded == "on"

    def field_bounds(self, scene_bounds: Tensor) -> Tensor:
        """[2, 3] box of the field and occupancy grid (default: the scene's bounds)."""
        return scene_bounds

    def __init__(self, config: RadianceConfig, scene: Scene, device: torch.device):
        super().__init__(config, scene, device)
        self.scene_times = scene.times  # [N, 1] per training image, or None for a static scene
        aabb = scene.bounds.float()
        box = self.field_bounds(aabb)
        self.unbounded = self._is_unbounded(config, scene)
        self.n_far = config.far_samples if self.unbounded else 0
        self.alpha_thre = config.alpha_thre if config.alpha_thre >= 0 else (1e-2 if self.unbounded else 0.0)
        self.field = self.make_field(box).to(device)
        self.estimator = OccupancyGrid(box.reshape(-1), config.grid_resolution).to(device)
        self.step_size = float((aabb[1] - aabb[0]).norm()) / config.steps_per_diagonal
        self.near, self.far = float(scene.near), float(scene.far)
        self.scene_bg = background_rgb(scene.background).to(device)
        # all training pixels, flat, with per-image offsets (images may differ in size)
        sizes = torch.tensor([im.shape[0] * im.shape[1] for im in scene.images])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]).to(device)
        self.widths = torch.tensor([im.shape[1] for im in scene.images], device=device)
        self.pixels = torch.cat([im.reshape(-1, im.shape[-1]) for im in scene.images]).to(device)
        # with masks, rays are drawn from the pixels they mark as used (flat indices), else from all
        masks = scene.masks
        self.usable = None if masks is None else torch.cat([m.reshape(-1) for m in masks]).nonzero()[:, 0].to(device)
        if self.usable is not None and len(self.usable) == 0:
            raise FieldforgeError(f"{scene.source}: the masks leave no training pixel")
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.batch_rays = config.init_batch_rays
        self.optimizer = self.make_optimizer()
        self._teacher: tuple[Teacher, ...] = ()  # handed over by the trainer (set_teacher), never saved
        self._ddp: tuple[torch.nn.Module, ...] = ()  # the DDP wrapper when training data-parallel, never saved

    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        # fused Adam: one kernel over all tensors instead of a chain of per-tensor ops
        return torch.optim.Adam(self.field.parameters(), lr=c.lr, betas=(0.9, c.beta2), eps=c.eps,
                                weight_decay=c.weight_decay, fused=True)

    # ------------------------------------------------------------------ training
    def distribute(self) -> None:
        """Train data-parallel on the current process group (:mod:`fieldforge.apps.training.distributed`):
        each rank marches its share of the ray batch, drawn from its own generator seeded by its
        rank; DDP averages the field's gradients; grid updates are broadcast from rank 0."""
        self.load_rank_state(None)
        self._ddp = (distributed.data_parallel(self.field),)

    def rank_state(self) -> dict:
        """The state that differs between ranks: the generator of rays, backgrounds and jitter."""
        return {"generator": self.generator.get_state()}

    def load_rank_state(self, state: dict | None) -> None:
        """Restore :meth:`rank_state`; None: this rank's fresh generator (seeded by seed + rank)."""
        if state is None:
            self.generator.manual_seed(self.config.seed + distributed.rank())
        else:
            self.generator.set_state(state["generator"].cpu() if self.device.type == "cpu" else state["generator"])

    def _step_optimizer(self, step: int) -> None:
        """Adam step at lr * lr_final_factor^(step / steps) (exponential decay over the plan's horizon)."""
        c = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = decayed(c.lr, c.lr_final_factor, step, c.steps)
        self.optimizer.step()

    def _objective(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, run as DDP's forward when training data-parallel."""
        return self._ddp[0](fn, *args, **kwargs) if self._ddp else fn(*args, **kwargs)

    def _batch(self, n: int) -> tuple:
        """``n`` random training pixels (unmasked ones when the scene has masks): rays, pixel values."""
        pool = int(self.offsets[-1]) if self.usable is None else len(self.usable)
        idx = torch.randint(pool, (n,), generator=self.generator, device=self.device)
        idx = idx if self.usable is None else self.usable[idx]
        cam = torch.searchsorted(self.offsets, idx, right=True) - 1
        local = idx - self.offsets[cam]
        w = self.widths[cam]
        u = (local % w).float() + 0.5
        v = torch.div(local, w, rounding_mode="floor").float() + 0.5
        px = self.pixels[idx].float() / 255.0
        return pixel_rays(self.train_cameras, cam, u, v), px

    def _train_background(self, n: int) -> Tensor:
        mode = self.config.train_background
        if mode == "random":
            return torch.rand(n, 3, generator=self.generator, device=self.device)
        return (self.scene_bg if mode == "scene" else background_rgb(mode).to(self.device)).expand(n, 3)

    def _occupancy_eval(self, x: Tensor) -> Tensor:
        """density * step size at grid points; dynamic scenes: at a random training-frame time per
        point (the grid's decayed max then covers every frame; few distinct times keep ResField
        layers on their per-time-weight path)."""
        t = None
        if self.scene_times is not None:
            times = self.scene_times.to(x.device).reshape(-1)
            t = times[torch.randint(len(times), (len(x),), device=x.device)][:, None]
        return self.field.density(x, t) * self.step_size

    def regularizer(self) -> Tensor | None:
        """Extra loss term added to the image loss (None: no term)."""
        return None

    def teacher_run(self, step: int) -> str:
        return self.config.teacher if step < self.config.distill_steps else ""

    def set_teacher(self, field: Field) -> None:
        self._teacher = (Teacher(field),)

    def _distill_step(self, step: int) -> dict[str, float]:
        if not self._teacher:
            raise RuntimeError("distillation step without a teacher: the trainer hands it over with set_teacher")
        teacher = self._teacher[0]
        if step == 0:
            teacher.init_occupancy(self.estimator, self.step_size, self.config.occ_thre)
            distributed.broadcast_state(self.estimator)
        n, frac = distributed.share(self.config.distill_batch)
        loss = self._objective(teacher.loss, self.field, self.estimator, n, self.step_size, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * (frac * distributed.world_size())).backward()  # DDP averages: each point weighs 1 / batch
        self._step_optimizer(step)
        return {"loss": distributed.all_sum(float(loss.detach()) * frac)[0], "distill": 1.0}

    def _train_forward(self, rays: Rays, background: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        """The differentiable part of an image step: the marched batch and the regulariser."""
        c = self.config
        out = render_rays(self.field, self.estimator, rays, background, self.step_size, self.near, self.far,
                          stratified=True, early_stop_eps=c.early_stop_eps, alpha_thre=self.alpha_thre,
                          generator=self.generator, n_far=self.n_far, return_samples=c.distortion > 0)
        return out, self.regularizer()

    def _distortion(self, out: dict[str, Tensor], n_rays: int) -> Tensor:
        """Mean distortion loss of the batch (:func:`fieldforge.render.volume.distortion`), with
        distances normalised as mip-NeRF 360's s = 1 - near / t (the disparity from ``near``, in
        [0, 1)) so that the far samples of unbounded scenes count in proportion to their spacing."""
        near = max(self.near, 1e-3)
        s0, s1 = 1 - near / out["t_starts"].clamp_min(near), 1 - near / out["t_ends"].clamp_min(near)
        return distortion(out["weights"], s0, s1, out["ray_indices"], n_rays).mean()

    def train_step(self, step: int) -> dict[str, float]:
        c = self.config
        if self.teacher_run(step):
            return self._distill_step(step)
        self.estimator.update_every_n_steps(
            step, self._occupancy_eval, occ_thre=c.occ_thre,
            warmup_steps=c.grid_warmup, n=c.grid_every, stride=c.grid_stride)
        if step % c.grid_every == 0:
            distributed.broadcast_state(self.estimator)  # every rank keeps rank 0's grid
        batch = self.batch_rays
        n, frac = distributed.share(batch)  # this rank's rays
        rays, px = self._batch(n)
        bg = self._train_background(len(rays))
        if px.shape[-1] == 4:
            gt = px[:, :3] * px[:, 3:] + bg * (1 - px[:, 3:])
        else:
            gt = px
        out, reg = self._objective(self._train_forward, rays, bg)
        mse_t = torch.mean((out["rgb"] - gt) ** 2)
        data_t = mse_t
        if c.distortion > 0:
            data_t = data_t + c.distortion * self._distortion(out, len(rays))
        weight = frac * distributed.world_size()  # DDP averages over ranks: each ray weighs 1 / batch
        loss = data_t * weight if reg is None else data_t * weight + reg
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._step_optimizer(step)
        mse, data, n_samples = distributed.all_sum(float(mse_t.detach()) * frac, float(data_t.detach()) * frac,
                                                   float(out["num_samples"]))
        self.batch_rays = int(min(c.max_batch_rays, max(256, self.batch_rays * c.target_samples / max(n_samples, 1))))
        return {"loss": data + (0.0 if reg is None else float(reg.detach())), "psnr": -10 * math.log10(max(mse, 1e-12)),
                "rays": float(batch), "samples": n_samples}

    # ------------------------------------------------------------------ rendering
    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor) -> dict[str, Tensor]:
        c = self.config
        return render_camera(self.field, self.estimator, cameras.to(self.device), background.to(self.device),
                             self.step_size, self.near, self.far, chunk=c.render_chunk,
                             early_stop_eps=c.early_stop_eps, alpha_thre=self.alpha_thre, n_far=self.n_far)

    # ------------------------------------------------------------------ state
    def state_dict(self, *args, **kwargs) -> dict:  # type: ignore[override]
        return {"field": self.field.state_dict(), "estimator": self.estimator.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **self.rank_state(), "batch_rays": self.batch_rays}

    def load_state_dict(self, state: dict, strict: bool = True):  # type: ignore[override]
        self.field.load_state_dict(state["field"])
        self.estimator.load_state_dict(state["estimator"])
        self.optimizer.load_state_dict(state["optimizer"])  # (a "scheduler" entry of older runs is not needed)
        self.load_rank_state(state)
        self.batch_rays = int(state["batch_rays"])


@dataclasses.dataclass
class NGPConfig(RadianceConfig):
    n_levels: int = 16
    n_features: int = 2
    log2_hashmap_size: int = 17
    base_resolution: int = 16
    max_resolution: int = 1024
    hidden: int = 64
    distortion: float = 0.01  # higher PSNR and faster renders on lego and on fern (README, time budgets)
    beta2: float = 0.99  # Instant-NGP's Adam (arXiv:2201.05989, section 4): +0.55 dB on lego at 10 minutes (README)


class NGPMethod(RadianceMethod):
    name = "ngp"
    Config = NGPConfig
    supports_unbounded = True

    def make_field(self, aabb: Tensor) -> Field:
        from fieldforge.fields.ngp import NGPField

        c = self.config
        return NGPField(aabb, c.n_levels, c.n_features, c.log2_hashmap_size, c.base_resolution,
                        c.max_resolution, hidden=c.hidden, unbounded=self.unbounded)


@dataclasses.dataclass
class NeRFConfig(RadianceConfig):
    lr: float = 5e-3
    width: int = 128
    depth: int = 4
    pos_freqs: int = 10
    dir_freqs: int = 4
    activation: str = "relu"  # "sine": SIREN trunk on raw coordinates (pos_freqs unused)
    omega_0: float = 30.0  # SIREN frequency, used when activation == "sine"
    target_samples: int = 2**15


class NeRFMethod(RadianceMethod):
    name = "nerf"
    Config = NeRFConfig

    def make_field(self, aabb: Tensor) -> Field:
        from fieldforge.fields.nerf import NeRFField

        c = self.config
        return NeRFField(aabb, c.width, c.depth, c.pos_freqs, c.dir_freqs, activation=c.activation,
                         omega_0=c.omega_0)


@dataclasses.dataclass
class RBFConfig(RadianceConfig):
    n_units: int = 32
    n_levels: int = 8
    n_features: int = 4
    log2_hashmap_size: int = 17
    base_resolution: int = 16
    max_resolution: int = 256
    sh_degree: int = 2


class RBFMethod(RadianceMethod):
    """Gaussian RBF field (GNF-SH): hash-grid features decoded by one layer of Gaussian units."""

    name = "rbf"
    Config = RBFConfig

    def make_field(self, aabb: Tensor) -> Field:
        from fieldforge.fields.rbf import RBFField

        c = self.config
        return RBFField(aabb, c.n_units, c.n_levels, c.n_features, c.log2_hashmap_size, c.base_resolution,
                        c.max_resolution, c.sh_degree)


@dataclasses.dataclass
class CAMConfig(NeRFConfig):
    cam_resolution: tuple[int, ...] = (10, 3)  # azimuth x elevation knots of the view-direction grid
    cam_mode: str = "scalar"
    cam_norm: str = "none"


class CAMMethod(NeRFMethod):
    """``nerf`` with coordinate-aware modulation of its view-dependent layer (fields/cam.py)."""

    name = "cam"
    Config = CAMConfig

    def make_field(self, aabb: Tensor) -> Field:
        from fieldforge.fields.nerf import NeRFField

        c = self.config
        return NeRFField(aabb, c.width, c.depth, c.pos_freqs, c.dir_freqs, activation=c.activation,
                         omega_0=c.omega_0, cam=True, cam_resolution=c.cam_resolution, cam_mode=c.cam_mode,
                         cam_norm=c.cam_norm)


@dataclasses.dataclass
class ResFieldsNeRFConfig(NeRFConfig):
    time_freqs: int = 6
    rank: int = 10  # 0: the plain time-conditioned MLP (baseline)
    capacity: int = 0  # time knots of the ResField layers; 0 = number of distinct training times


class ResFieldsNeRFMethod(NeRFMethod):
    """Dynamic scenes: time-conditioned NeRF MLP whose layers after the first are ResField layers."""

    name = "resfields-nerf"
    Config = ResFieldsNeRFConfig

    def make_field(self, aabb: Tensor) -> Field:
        from fieldforge.fields.dynamic_nerf import DynamicNeRFField

        c = self.config
        if self.scene_times is None:
            raise FieldforgeError("resfields-nerf needs a scene with per-frame times (e.g. D-NeRF 'time')")
        capacity = c.capacity or len(torch.unique(self.scene_times))
        return DynamicNeRFField(aabb, c.width, c.depth, c.pos_freqs, c.dir_freqs, c.time_freqs, capacity, c.rank)
