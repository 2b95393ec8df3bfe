"""``fieldforge bench signals``: fit 2-D images and a 3-D occupancy with each encoding.

Protocol (defaults; all in ``protocol`` of the JSON):
- Images are box-resized to ``--size`` (S) squared, values in [0, 1]. Training uses the even
  pixel lattice (S/2 squared pixels, full batch); PSNR is measured on the other 3/4 of the
  pixels (held out), after a sigmoid output. Built-in signals: ``camera`` and ``astronaut``
  (scikit-image) and ``wideband`` (smooth left half, a zone plate up to ~0.9x the training
  Nyquist frequency in the right half); any image path works too.
- ``video:blobs`` (generated, 16 frames): coordinates (x, y, t), the even lattice of every frame
  trains, the rest is held out; ``siren`` against ``resfields-siren`` (half the width, ResField
  layers over the frames, rank chosen for an equal parameter count).
- ``mesh:NAME`` (or a mesh path) fits occupancy: inside/outside by the generalised winding
  number of the mesh scaled into [0.05, 0.95]^3; half of the points uniform, half near the
  surface (N(0, 0.01) offsets), BCE-with-logits loss, IoU on an independent point set.
- Every coordinate network gets the same ReLU MLP (``--hidden`` x ``--layers``) after its
  encoding, Adam, ``--steps`` full-batch steps, seed ``--seed``; SIREN and the RBF grid are
  whole models. Coordinates are in [0, 1]^d and mapped to each encoding's ``input_range``.
- CAM (images only): the ``fourier`` model with its hidden pre-activations normalised per pixel
  (no affine) and modulated by a 32 x 32 scalar gamma/beta grid per layer over the pixel
  coordinate in [-1, 1]^2; the grids train at ``CAM_GRID_LR_MULTIPLIER`` x the encoding's lr.
- FreSh (per image signal): candidates ``--sigmas`` for the Fourier-feature sigma; spectra of
  10 untrained seeds on the training lattice (spectrum size S/4); the sweep trains every
  candidate with the same protocol. ``equal_time`` trains the Fourier MLP for the RBF grid's
  wall time.

Adding an encoding is one entry in :data:`ENCODINGS`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fieldforge.apps.bench.runs import data_root
from fieldforge.apps.training.metrics import psnr
from fieldforge.encoders import (SAPE, FourierFeatures, FrequencyEncoding, HashGrid, ShiftedBasisEncoding, Siren,
                                 rbf_field)
from fieldforge.encoders import fresh
from fieldforge.errors import DataError, FieldforgeError
from fieldforge.fields.cam import CAMMLP
from fieldforge.fields.resfields import ResFieldSiren

BUILTIN_MESHES = {"spot": "common-3d-test-models/data/spot.zip-extracted/spot/spot_triangulated.obj",
                  "bunny": "libigl-tutorial-data/bunny.off"}
DEFAULT_SIGNALS = ["camera", "astronaut", "wideband", "mesh:spot"]
FOURIER_FEATURES, FOURIER_SIGMA, FOURIER_LOW_SIGMA = 128, 8.0, 1.0
VIDEO_FRAMES = 16
CAM_RESOLUTION, CAM_GRID_LR_MULTIPLIER = (32, 32), 10.0


@dataclass
class Signal:
    """Training and test samples; coordinates in [0, 1]^d, values in [0, 1]."""

    name: str
    kind: str  # "image" | "occupancy"
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    train_shape: tuple[int, ...] = ()  # (H, W) of the training lattice, images only

    @property
    def in_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def channels(self) -> int:
        return self.y_train.shape[1]


# ---------------------------------------------------------------------------------------- signals
def wideband(size: int) -> np.ndarray:
    """[S, S] image: smooth low-frequency left half, zone plate (fine detail) right half."""
    y, x = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size, indexing="ij")
    smooth = 0.5 + 0.25 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y) + 0.15 * (y - 0.5)
    r2 = (x - 0.75) ** 2 + (y - 0.5) ** 2
    k = 0.9 * (size / 4) / 0.5  # local frequency k*r reaches 0.9x the training Nyquist (S/4) at r = 0.5
    zone = 0.5 + 0.4 * np.cos(np.pi * k * r2)
    return np.where(x < 0.5, smooth, zone)


def load_image(name: str, size: int) -> np.ndarray:
    """[S, S, C] float in [0, 1] from a built-in name or an image file."""
    if name == "wideband":
        return wideband(size)[..., None]
    if name in ("camera", "astronaut"):
        import skimage.data

        img = getattr(skimage.data, name)()
    else:
        import imageio.v3 as iio

        path = Path(name)
        if not path.is_file():
            raise DataError(path, "no such image file (built-in signals: camera, astronaut, wideband, mesh:spot)")
        try:
            img = iio.imread(path)
        except Exception as e:  # imageio raises many types for unreadable files
            raise DataError(path, f"cannot read image ({e})") from None
    img = np.asarray(img, dtype=np.float64)
    img = img[..., None] if img.ndim == 2 else img[..., :3]
    img = img / (65535.0 if img.max() > 255 else 255.0)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    side = min(t.shape[-2:])
    t = t[..., :side, :side]  # square crop, then box/antialiased resize
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 1).numpy()


def blobs_video(size: int, frames: int) -> np.ndarray:
    """[F, S, S, 3] generated video: three coloured Gaussian blobs on circular paths over a
    drifting stripe pattern (no two frames alike, smooth in time)."""
    y, x = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size, indexing="ij")
    out = np.zeros((frames, size, size, 3))
    colours = np.array([[1.0, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 1.0]])
    for k in range(frames):
        t = k / frames
        img = 0.3 + 0.15 * np.sin(2 * np.pi * (6 * x + 2 * y - t))[..., None] * np.ones(3)
        for j, c in enumerate(colours):
            a = 2 * np.pi * (t + j / 3)
            cx, cy = 0.5 + 0.28 * np.cos(a), 0.5 + 0.28 * np.sin(a)
            img = img + 0.6 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.008)[..., None] * c
        out[k] = np.clip(img, 0, 1)
    return out


def video_signal(name: str, size: int, frames: int = VIDEO_FRAMES) -> Signal:
    """``video:blobs``: coordinates (x, y, t) in [0, 1]^3 (t = k / (F - 1)); every frame's even
    pixel lattice trains, the other 3/4 of each frame's pixels are held out."""
    if name != "video:blobs":
        raise FieldforgeError(f"unknown video signal {name!r} (built-in: video:blobs)")
    vid = torch.from_numpy(blobs_video(size, frames)).float()
    c = (torch.arange(size) + 0.5) / size
    tt, yy, xx = torch.meshgrid(torch.linspace(0, 1, frames), c, c, indexing="ij")
    coords = torch.stack([xx, yy, tt], -1)
    train = torch.zeros(frames, size, size, dtype=torch.bool)
    train[:, ::2, ::2] = True
    return Signal(name, "video", coords[train], vid[train], coords[~train], vid[~train], (size // 2, size // 2))


def image_signal(name: str, size: int) -> Signal:
    if size < 16 or size % 2:
        raise FieldforgeError(f"--size must be an even number >= 16, got {size}")
    img = torch.from_numpy(load_image(name, size)).float()
    c = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    coords = torch.stack([xx, yy], -1)
    train = torch.zeros(size, size, dtype=torch.bool)
    train[::2, ::2] = True
    h = size // 2
    return Signal(name, "image", coords[train], img[train], coords[~train], img[~train], (h, h))


def winding_number(p: Tensor, tris: Tensor, chunk: int = 256) -> Tensor:
    """Generalised winding number of points p [N, 3] w.r.t. triangles [T, 3, 3] (float64)."""
    out = []
    for q in p.split(chunk):
        a, b, c = (tris[None, :, i] - q[:, None] for i in range(3))
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(torch.atan2(det, den).sum(-1) / (2 * math.pi))
    return torch.cat(out)


def mesh_signal(spec: str, n_points: int, seed: int) -> Signal:
    import trimesh

    key = spec.split(":", 1)[1] if spec.startswith("mesh:") else spec
    if key in BUILTIN_MESHES and data_root() is None:
        raise DataError(Path(BUILTIN_MESHES[key]), "a built-in mesh needs FIELDFORGE_DATA (the folder holding meshes/)")
    path = data_root() / "meshes" / BUILTIN_MESHES[key] if key in BUILTIN_MESHES else Path(key)
    if not path.is_file():
        raise DataError(path, "mesh file not found")
    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as e:
        raise DataError(path, f"cannot read mesh ({e})") from None
    if len(mesh.faces) == 0:
        raise DataError(path, "mesh has no faces")
    v = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float64))
    lo, hi = v.min(0).values, v.max(0).values
    v = (v - (lo + hi) / 2) / (hi - lo).max() * 0.9 + 0.5
    tris = v[torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64))]
    g = torch.Generator().manual_seed(seed)

    def points(n: int) -> tuple[Tensor, Tensor]:
        area = torch.linalg.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]).norm(dim=-1)
        f = torch.multinomial(area, n // 2, replacement=True, generator=g)
        r = torch.rand(n // 2, 2, generator=g, dtype=torch.float64)
        s = r[:, :1].sqrt()
        bary = torch.cat([1 - s, s * (1 - r[:, 1:]), s * r[:, 1:]], 1)
        near = (bary[:, :, None] * tris[f]).sum(1) + 0.01 * torch.randn(n // 2, 3, generator=g, dtype=torch.float64)
        x = torch.cat([torch.rand(n - n // 2, 3, generator=g, dtype=torch.float64), near]).clamp(0, 1)
        return x.float(), (winding_number(x, tris) > 0.5).float()[:, None]

    x_tr, y_tr = points(n_points)
    x_te, y_te = points(n_points)
    return Signal(f"mesh:{path.stem}", "occupancy", x_tr, y_tr, x_te, y_te)


def load_signal(spec: str, size: int, n_points: int, seed: int) -> Signal:
    if spec.startswith("video:"):
        return video_signal(spec, size)
    is_mesh = spec.startswith("mesh:") or Path(spec).suffix.lower() in (".obj", ".ply", ".off", ".stl")
    return mesh_signal(spec, n_points, seed) if is_mesh else image_signal(spec, size)


# ------------------------------------------------------------------------------------- encodings
class Fitted(nn.Module):
    """A model on [0, 1]^d coordinates: maps them into ``input_range`` and applies ``body``."""

    def __init__(self, body: nn.Module, input_range: tuple[float, float]):
        super().__init__()
        self.body, self.lo, self.hi = body, float(input_range[0]), float(input_range[1])

    def to_input(self, x01: Tensor) -> Tensor:
        return self.lo + (self.hi - self.lo) * x01

    def forward(self, x01: Tensor) -> Tensor:
        return self.body(self.to_input(x01))


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Sequential:
    dims = [in_dim] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(dims[-1], out_dim))


@dataclass
class Ctx:
    """What an encoding factory may use: input dim, outputs, training-lattice side, MLP size."""

    in_dim: int
    out_dim: int
    side: int  # training samples per axis (images) or a nominal resolution (3-D)
    hidden: int
    layers: int
    seed: int = 0
    frames: int = 0  # time knots of a video signal (0: not a video)


def with_mlp(enc: nn.Module, c: Ctx) -> Fitted:
    return Fitted(nn.Sequential(enc, mlp(enc.out_dim, c.out_dim, c.hidden, c.layers)), enc.input_range)


def fourier(c: Ctx, sigma: float = FOURIER_SIGMA) -> Fitted:
    return with_mlp(FourierFeatures(c.in_dim, FOURIER_FEATURES, sigma, include_input=True, seed=c.seed), c)


class CAMBody(nn.Module):
    """Encoding + :class:`CAMMLP` modulated by the encoding's own input coordinate."""

    def __init__(self, enc: nn.Module, net: CAMMLP):
        super().__init__()
        self.enc, self.net = enc, net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.enc(x), x)


def cam(c: Ctx) -> Fitted:
    enc = FourierFeatures(c.in_dim, FOURIER_FEATURES, FOURIER_SIGMA, include_input=True, seed=c.seed)
    net = CAMMLP(enc.out_dim, c.hidden, c.layers, c.out_dim, cam_resolution=CAM_RESOLUTION, norm="per_sample",
                 cam_lr_multiplier=CAM_GRID_LR_MULTIPLIER)
    return Fitted(CAMBody(enc, net), enc.input_range)


def frequency(c: Ctx) -> Fitted:
    # highest frequency 2^(L-1) pi on [-1, 1] = 2^(L-2) cycles per unit of [0, 1] ~ the Nyquist side/2
    return with_mlp(FrequencyEncoding(c.in_dim, max(int(math.log2(c.side)) + 1, 1)), c)


def hashgrid(c: Ctx) -> Fitted:
    grid = HashGrid(c.in_dim, n_levels=8, n_features=2, log2_hashmap_size=14 if c.in_dim == 2 else 16,
                    base_resolution=4, max_resolution=c.side)
    return Fitted(nn.Sequential(grid, mlp(grid.out_dim, c.out_dim, 64, 2)), grid.input_range)


def sape(c: Ctx) -> Fitted:
    enc = FourierFeatures(c.in_dim, FOURIER_FEATURES, FOURIER_SIGMA, include_input=True, seed=c.seed)
    return with_mlp(SAPE(enc, res=max(c.side // 2, 3) if c.in_dim == 2 else 16, eps=1e-3), c)


def shifted(basis: str) -> Callable[[Ctx], Fitted]:
    return lambda c: with_mlp(ShiftedBasisEncoding(c.in_dim, c.side, basis, 1.0 / c.side), c)


def siren(c: Ctx) -> Fitted:
    return Fitted(Siren(c.in_dim, c.out_dim, c.hidden, c.layers, omega_0=30.0), Siren.input_range)


def resfields_siren(c: Ctx) -> Fitted:
    """SIREN of half the width with ResField layers over the frames, rank chosen so the parameter
    count matches the ``siren`` entry's (the equal-parameter comparison of the issue)."""
    half = max(c.hidden // 2, 1)
    target = n_params(Siren(c.in_dim, c.out_dim, c.hidden, c.layers))
    base = n_params(Siren(c.in_dim, c.out_dim, half, c.layers))
    per_rank = (c.layers - 1) * (c.frames + half * half)
    rank = max(1, round((target - base) / max(per_rank, 1)))
    return Fitted(ResFieldSiren(c.in_dim, c.out_dim, half, c.layers, max(c.frames, 1), rank), Siren.input_range)


def rbf(c: Ctx) -> Fitted:
    model = rbf_field(c.in_dim, c.out_dim, n_units=32, n_levels=4, n_features=4, base_resolution=8,
                      max_resolution=c.side, log2_hashmap_size=14 if c.in_dim == 2 else 16, seed=c.seed)
    return Fitted(model, model.input_range)


@dataclass
class EncodingSpec:
    build: Callable[[Ctx], Fitted]
    lr: float
    note: str
    kinds: tuple[str, ...] = ("image", "occupancy")  # signal kinds it applies to


ENCODINGS: dict[str, EncodingSpec] = {
    "frequency": EncodingSpec(frequency, 1e-3, "NeRF PE, L = log2(side)+1, pi factor, + MLP"),
    "fourier": EncodingSpec(fourier, 1e-3, f"RFF m={FOURIER_FEATURES}, sigma={FOURIER_SIGMA} on [-1,1] (full band), + MLP"),
    "fourier-low": EncodingSpec(lambda c: fourier(c, FOURIER_LOW_SIGMA), 1e-3,
                                f"RFF m={FOURIER_FEATURES}, sigma={FOURIER_LOW_SIGMA} (low band), + MLP"),
    "shifted-gaussian": EncodingSpec(shifted("gaussian"), 1e-3, "side centres/axis, sigma 1/side, fixed norm, + MLP"),
    "shifted-triangle": EncodingSpec(shifted("triangle"), 1e-3, "side centres/axis, width 1/side, + MLP"),
    "sape": EncodingSpec(sape, 1e-3, f"SAPE on the full-band RFF, eps 1e-3, grid side/2 (2-D) or 16^3"),
    "hashgrid": EncodingSpec(hashgrid, 1e-2, "8 levels x 2, N_min 4, N_max side, T 2^14 (2-D) / 2^16, + 2x64 MLP"),
    "rbf": EncodingSpec(rbf, 1e-2, "GNF: 4 levels x 4, N 8..side, 32 RBF units + linear"),
    "siren": EncodingSpec(siren, 1e-4, "SIREN omega_0 30, hidden x layers", kinds=("image", "occupancy", "video")),
    "resfields-siren": EncodingSpec(resfields_siren, 1e-4, "SIREN omega_0 30, hidden/2 x layers, ResField layers "
                                    "1..layers-1 over the frames, rank matching siren's parameter count; videos only",
                                    kinds=("video",)),
    "cam": EncodingSpec(cam, 1e-3, f"fourier + CAM: per-pixel norm, {CAM_RESOLUTION[0]}x{CAM_RESOLUTION[1]} "
                        f"scalar gamma/beta grid per hidden layer over (x, y), grid lr {CAM_GRID_LR_MULTIPLIER:g}x; "
                        "images only", kinds=("image",)),
}


# -------------------------------------------------------------------------------------- training
def loss_per_point(out: Tensor, y: Tensor, kind: str) -> Tensor:
    if kind in ("image", "video"):
        return (torch.sigmoid(out) - y).square().mean(-1)
    return F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(-1)


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """Adam groups: everything at ``lr``, except CAM grids at ``lr`` x their ``cam_lr_multiplier``."""
    cams = [m for m in model.modules() if isinstance(m, CAMMLP)]
    grid = {id(p) for m in cams for p in m.cam_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in grid], "lr": lr}]
    return groups + [{"params": list(m.cam_parameters()), "lr": lr * m.cam_lr_multiplier} for m in cams]


def fit_signal(model: Fitted, sig: Signal, steps: int, lr: float, seconds: float | None = None) -> tuple[float, int]:
    """Full-batch Adam; stops after ``steps`` or, if given, once ``seconds`` of wall time are spent."""
    opt = torch.optim.Adam(param_groups(model, lr), lr=lr)
    controller = next((m for m in model.modules() if isinstance(m, SAPE)), None)
    every = controller.block_iterations(steps) if controller is not None else 0
    t0 = time.perf_counter()
    step = 0
    while step < steps if seconds is None else time.perf_counter() - t0 < seconds:
        per_point = loss_per_point(model(sig.x_train), sig.y_train, sig.kind)
        opt.zero_grad(set_to_none=True)
        per_point.mean().backward()
        opt.step()
        if controller is not None:
            controller.accumulate(model.to_input(sig.x_train), per_point)
            if step % every == 0:
                controller.advance()
        step += 1
    return time.perf_counter() - t0, step


@torch.no_grad()
def signal_psnr(model: Fitted, sig: Signal) -> float:
    """Held-out PSNR (images) or IoU (occupancy)."""
    out = torch.cat([model(x) for x in sig.x_test.split(1 << 15)])
    if sig.kind in ("image", "video"):
        return psnr(torch.sigmoid(out), sig.y_test)
    pred, gt = out > 0, sig.y_test > 0.5
    return float((pred & gt).sum() / (pred | gt).sum().clamp_min(1))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fit(name: str, sig: Signal, ctx: Ctx, steps: int, seconds: float | None = None) -> dict:
    spec = ENCODINGS[name]
    torch.manual_seed(ctx.seed)
    model = spec.build(ctx)
    wall, done = fit_signal(model, sig, steps, spec.lr, seconds)
    score = signal_psnr(model, sig)
    pixels = sig.kind in ("image", "video")
    row = {"signal": sig.name, "encoding": name, "psnr": score if pixels else None,
           "seconds": round(wall, 3), "params": n_params(model), "steps": done}
    if not pixels:
        row["iou"] = score
    return row


def run_fresh(sig: Signal, ctx: Ctx, sigmas: list[float], steps: int) -> dict:
    """FreSh's choice of the Fourier sigma against training every candidate."""
    h, w = sig.train_shape
    coords = sig.x_train.reshape(h, w, 2)
    target = sig.y_train.reshape(h, w, -1)

    def factory(sigma: float, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = fourier(Ctx(**{**ctx.__dict__, "seed": seed}), sigma)
        return lambda c: torch.sigmoid(model(c))

    choice = fresh.select(factory, sigmas, coords, target, n_seeds=10, spectrum_size=h // 4)
    sweep, t0 = [], time.perf_counter()
    for s in sigmas:
        torch.manual_seed(ctx.seed)
        model = fourier(ctx, s)
        fit_signal(model, sig, steps, ENCODINGS["fourier"].lr)
        sweep.append({"value": s, "psnr": signal_psnr(model, sig)})
    sweep_seconds = time.perf_counter() - t0
    chosen_psnr = next(r["psnr"] for r in sweep if r["value"] == choice.chosen)
    return {"signal": sig.name, "encoding": "fourier", "chosen": choice.chosen, "chosen_psnr": chosen_psnr,
            "best": max(sweep, key=lambda r: r["psnr"])["value"], "best_psnr": max(r["psnr"] for r in sweep),
            "distances": [round(d, 4) for d in choice.distances], "sweep": sweep,
            "fresh_seconds": round(choice.seconds, 3), "sweep_seconds": round(sweep_seconds, 3)}


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--signals", default=",".join(DEFAULT_SIGNALS),
                   help="comma list: camera, astronaut, wideband, video:blobs, mesh:spot, mesh:bunny, image or mesh paths")
    p.add_argument("--encodings", default=",".join(ENCODINGS), help=f"comma list of {', '.join(ENCODINGS)}")
    p.add_argument("--steps", type=int, default=200, help="Adam steps per fit")
    p.add_argument("--size", type=int, default=96, help="image side S (training lattice S/2)")
    p.add_argument("--points", type=int, default=8192, help="3-D training (and test) points")
    p.add_argument("--hidden", type=int, default=128, help="MLP width after each encoding")
    p.add_argument("--layers", type=int, default=3, help="MLP hidden layers")
    p.add_argument("--sigmas", default="1,2,4,8,16", help="FreSh candidates / sweep of the RFF sigma ('' = skip)")
    p.add_argument("--no-equal-time", action="store_true", help="skip the RBF-vs-Fourier equal-time row")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (small-tensor loops: 1 is often fastest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("signals.json"), help="JSON file to write")


def parse_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def run(args: argparse.Namespace) -> int:
    encodings = parse_list(args.encodings)
    unknown = [e for e in encodings if e not in ENCODINGS]
    if unknown:
        raise FieldforgeError(f"unknown encoding(s) {', '.join(unknown)}; available: {', '.join(ENCODINGS)}")
    if args.steps < 1 or args.hidden < 1 or args.layers < 1 or args.points < 16:
        raise FieldforgeError("--steps, --hidden and --layers must be >= 1 and --points >= 16")
    try:
        sigmas = [float(s) for s in parse_list(args.sigmas)]
    except ValueError:
        raise FieldforgeError(f"--sigmas must be a comma list of numbers, got {args.sigmas!r}") from None
    if any(s <= 0 for s in sigmas):
        raise FieldforgeError("--sigmas must be > 0")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, encodings, sigmas)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, encodings: list[str], sigmas: list[float]) -> int:
    protocol = {
        "video": f"video:blobs, {VIDEO_FRAMES} frames of {args.size}^2 px, (x, y, t) in [0, 1]^3, even lattice of "
                 "every frame trains, the other 3/4 held out",
        "image": f"{args.size}^2 px, train on the even lattice ({args.size // 2}^2), PSNR on the other 3/4, sigmoid output",
        "occupancy": f"{args.points} points (half uniform, half near-surface +N(0,0.01)), BCE, IoU on a new set",
        "steps": args.steps, "optimizer": "Adam, full batch", "mlp": f"{args.layers} x {args.hidden} ReLU",
        "encodings": {e: {"lr": ENCODINGS[e].lr, "config": ENCODINGS[e].note} for e in encodings},
        "fresh": {"parameter": "RFF sigma ([-1,1] units)", "candidates": sigmas, "seeds": 10,
                  "spectrum_size": f"training side/4 = {args.size // 8}"},
        "equal_time": "fourier MLP trained for the rbf fit's wall time",
        "threads": args.threads, "seed": args.seed, "torch": torch.__version__,
    }
    rows, fresh_rows, equal = [], [], []
    for spec in parse_list(args.signals):
        try:
            sig = load_signal(spec, args.size, args.points, args.seed)
        except DataError as e:
            if spec.startswith("mesh:") and spec.split(":", 1)[1] in BUILTIN_MESHES:
                print(f"skipping {spec}: {e}")
                continue
            raise
        side = sig.train_shape[0] if sig.kind in ("image", "video") else 32
        frames = VIDEO_FRAMES if sig.kind == "video" else 0
        ctx = Ctx(sig.in_dim, sig.channels, side, args.hidden, args.layers, args.seed, frames)
        for name in encodings:
            if sig.kind not in ENCODINGS[name].kinds:
                print(f"{sig.name:>14} {name:>17}  skipped ({sig.kind} signal)", flush=True)
                continue
            row = fit(name, sig, ctx, args.steps)
            rows.append(row)
            score = f"PSNR {row['psnr']:6.2f} dB" if row["psnr"] is not None else f"IoU {row['iou']:.4f}"
            print(f"{sig.name:>14} {name:>17}  {score}  {row['seconds']:7.2f} s  {row['params']:>8} params", flush=True)
        if sig.kind == "image" and not args.no_equal_time and "rbf" in encodings:
            rbf_row = next(r for r in rows if r["signal"] == sig.name and r["encoding"] == "rbf")
            f_row = fit("fourier", sig, ctx, 10**9, seconds=rbf_row["seconds"])
            equal.append({"signal": sig.name, "rbf_psnr": rbf_row["psnr"], "rbf_seconds": rbf_row["seconds"],
                          "fourier_psnr": f_row["psnr"], "fourier_seconds": f_row["seconds"],
                          "fourier_steps": f_row["steps"]})
            print(f"{sig.name:>14} equal time {rbf_row['seconds']:.1f} s: rbf {rbf_row['psnr']:.2f} dB, "
                  f"fourier MLP {f_row['psnr']:.2f} dB ({f_row['steps']} steps)", flush=True)
        if sig.kind == "image" and sigmas:
            fr = run_fresh(sig, ctx, sigmas, args.steps)
            fresh_rows.append(fr)
            print(f"{sig.name:>14} FreSh chose sigma {fr['chosen']:g} ({fr['chosen_psnr']:.2f} dB) in "
                  f"{fr['fresh_seconds']:.1f} s; sweep best sigma {fr['best']:g} ({fr['best_psnr']:.2f} dB) in "
                  f"{fr['sweep_seconds']:.1f} s", flush=True)
    result = {"protocol": protocol, "rows": rows, "fresh": fresh_rows, "equal_time": equal}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0
