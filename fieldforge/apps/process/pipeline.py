"""Photographs or a video to posed data with pycolmap (``fieldforge process``).

:func:`process` writes the nerfstudio layout that ``fieldforge.scenes.load(DATA)`` reads:

- ``images/`` the photographs (copied) or the sampled video frames, ``images_K/`` copies
  box-downscaled by each K of ``--downscales`` (:mod:`fieldforge.apps.process.inputs`);
- ``colmap/sparse/0`` the COLMAP model with the most registered images, ``colmap/database.db``;
- ``transforms.json`` one shared camera (fl_x, fl_y, cx, cy in pixels, w, h, camera_model and
  its distortion) and the registered frames (``file_path``, OpenGL camera-to-world
  ``transform_matrix`` in COLMAP's world frame), ``ply_file_path`` = ``sparse_pc.ply``, the
  model's points with colours (:mod:`fieldforge.apps.process.sfm`);
- ``process_report.json`` (also printed): images registered, points, mean reprojection error,
  stage times; below :data:`WARN_FRACTION` registered, a warning and the options to try next.

Everything is built in a hidden folder beside DATA and renamed at the end, so a failure leaves
no DATA behind. Fewer than three registered images is an error (with the same advice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fieldforge.apps.process.inputs import IMAGE_SUFFIXES, MIN_IMAGES, gather_images, gather_video, is_video
from fieldforge.apps.process.sfm import SfmOptions, reconstruct, stats, transforms
from fieldforge.apps.training.files import staged
from fieldforge.errors import DataError, FieldforgeError
from fieldforge.scenes.loaders import detect_format

DEFAULT_FRAMES = 100  # video frames kept when neither fps nor num_frames is given
WARN_FRACTION = 0.8  # warn when fewer than this share of the images register


@dataclass(frozen=True)
class ProcessOptions:
    """What ``fieldforge process`` can be told: video sampling (``fps`` or ``num_frames``, default
    :data:`DEFAULT_FRAMES` frames), the factors of the downscaled copies, structure-from-motion
    options, and whether an existing output may be replaced."""

    sfm: SfmOptions = field(default_factory=SfmOptions)
    fps: float | None = None
    num_frames: int | None = None
    downscales: tuple[int, ...] = (2, 4, 8)
    force: bool = False


def check(src: Path, out: Path, opts: ProcessOptions) -> None:
    """One-line errors for options out of range, a missing input, or an output that would be overwritten."""
    for name, value, low in (("--fps", opts.fps, 0), ("--num-frames", opts.num_frames, MIN_IMAGES - 1),
                             ("--max-image-size", opts.sfm.max_image_size, 0), ("--num-threads", opts.sfm.num_threads, 0)):
        if value is not None and not value > low:
            raise FieldforgeError(f"{name} must be greater than {low}, got {value}")
    if any(k < 2 for k in opts.downscales):
        raise FieldforgeError(f"--downscales factors must be at least 2, got {opts.downscales}")
    if not src.exists():
        raise FieldforgeError(f"{src}: not found")
    if out.exists():
        if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
            raise FieldforgeError(f"{out}: holds the input {src}; choose another output folder")
        if not out.is_dir():
            raise FieldforgeError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not opts.force:
            raise FieldforgeError(f"{out}: folder exists and is not empty (pass --force to replace it)")
    if not out.parent.is_dir():
        raise FieldforgeError(f"{out.parent}: output's parent folder does not exist")


def advice(opts: ProcessOptions, video: bool, num_images: int, longest_side: int) -> list[str]:
    """Options to try when too few images register, given what was run."""
    tips = []
    if opts.sfm.matcher == "sequential":
        tips.append("--matcher exhaustive (match every pair, not only neighbours in name order)")
    if video:
        tips.append(f"more frames: --num-frames {2 * num_images} (or a higher --fps) for more overlap between neighbours")
    else:
        tips.append("more photographs with more overlap (every part of the scene in 3+ nearby views)")
    if longest_side > opts.sfm.max_image_size:
        tips.append(f"--max-image-size {min(longest_side, 2 * opts.sfm.max_image_size)} (SIFT saw images "
                    f"downscaled to {opts.sfm.max_image_size} px of {longest_side})")
    else:
        tips.append("higher-resolution images (SIFT already runs at full size)")
    if opts.sfm.camera_model in ("SIMPLE_PINHOLE", "PINHOLE"):
        tips.append("--camera-model SIMPLE_RADIAL or OPENCV if the lens visibly distorts")
    tips.append("sharp, evenly lit, textured views (blur, reflections and plain walls give no features)")
    return tips


def summary(report: dict) -> str:
    """The report as the lines ``fieldforge process`` prints."""
    lines = [f"registered {report['num_registered']} of {report['num_images']} images "
             f"({report['num_models']} model(s) found); {report['num_points']} points; "
             f"mean reprojection error {report['mean_reprojection_error_px']:.3f} px"]
    if report["warning"]:
        lines += [f"warning: {report['warning']}; try:"] + [f"  {t}" for t in report["suggestions"]]
    return "\n".join(lines)


def _build(src: Path, tmp: Path, opts: ProcessOptions) -> dict:
    video = is_video(src)
    num_frames = opts.num_frames or (DEFAULT_FRAMES if opts.fps is None else None)
    names, size = (gather_video(src, tmp, opts.downscales, opts.fps, num_frames) if video
                   else gather_images(src, tmp, opts.downscales))
    result = reconstruct(tmp / "images", names, tmp / "colmap", opts.sfm)
    rec = result.reconstruction
    registered = 0 if rec is None else rec.num_reg_images()
    tips = advice(opts, video, len(names), max(size))
    if registered < MIN_IMAGES:
        raise FieldforgeError(f"{src}: only {registered} of {len(names)} images registered (need {MIN_IMAGES}); "
                              f"try: {'; '.join(tips)}")
    sparse = tmp / "colmap" / "sparse" / "0"
    sparse.mkdir(parents=True)
    rec.write(sparse)
    rec.export_PLY(tmp / "sparse_pc.ply")
    meta = transforms(sparse)
    meta["ply_file_path"] = "sparse_pc.ply"
    (tmp / "transforms.json").write_text(json.dumps(meta, indent=2))
    report = {"input": str(src), "kind": "video" if video else "images", "num_images": len(names),
              "num_models": result.num_models, **stats(rec)}
    registered_names = set(report["registered"])
    report["unregistered"] = [n for n in names if n not in registered_names]
    low = report["num_registered"] < WARN_FRACTION * len(names)
    report["warning"] = (f"only {report['num_registered']} of {len(names)} images registered "
                         f"(below {WARN_FRACTION:.0%})") if low else None
    report["suggestions"] = tips if low else []
    report["options"] = {"matcher": opts.sfm.matcher, "camera_model": opts.sfm.camera_model,
                         "max_image_size": opts.sfm.max_image_size, "num_threads": opts.sfm.num_threads, "fps": opts.fps, "num_frames": num_frames if video else None,
                         "downscales": opts.downscales}
    report["seconds"] = {k: round(v, 3) for k, v in result.seconds.items()}
    (tmp / "process_report.json").write_text(json.dumps(report, indent=2))
    return report


def process(src: Path, out: Path, opts: ProcessOptions | None = None) -> dict:
    """Process the photographs or video ``src`` into the dataset folder ``out``; the report."""
    opts = opts or ProcessOptions()
    check(src, out, opts)
    with staged(out, force=True) as tmp:  # check refused an existing output without force
        tmp.mkdir()
        report = _build(src, tmp, opts)
    return report


def is_photos(path: Path) -> bool:
    """True for a video file, or a folder of photographs that no dataset loader recognises
    (what ``fieldforge train`` processes before training)."""
    if is_video(path):
        return True
    if not path.is_dir():
        return False
    try:
        detect_format(path)
    except DataError:
        return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return False


def prepared(data: Path, out: Path) -> Path:
    """``data`` itself, or for photographs or a video the posed dataset ``out/data`` made from
    them with the default options (reused when a previous run made it)."""
    if not is_photos(data):
        return data
    posed = out / "data"
    if (posed / "transforms.json").is_file():
        print(f"reusing {posed} (processed from {data})")
        return posed
    report = process(data, posed)  # nothing is left when the photos do not register
    print(summary(report))
    return posed
