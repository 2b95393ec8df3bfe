"""``fieldforge process``: photographs or a video to posed data with pycolmap.

    fieldforge process IMAGES_DIR|VIDEO -o DATA [--matcher exhaustive|sequential]
                       [--fps F | --num-frames N] [--downscales 2 4 8] [--camera-model M]
                       [--max-image-size PX] [--num-threads T] [--force]

Writes the nerfstudio layout that ``fieldforge.scenes.load(DATA)`` reads:

- ``images/`` the photographs (copied) or the sampled video frames, ``images_K/`` copies
  box-downscaled by each K of ``--downscales`` (:mod:`fieldforge.apps.process_inputs`);
- ``colmap/sparse/0`` the COLMAP model with the most registered images, ``colmap/database.db``;
- ``transforms.json`` one shared camera (fl_x, fl_y, cx, cy in pixels, w, h, camera_model and
  its distortion) and the registered frames (``file_path``, OpenGL camera-to-world
  ``transform_matrix`` in COLMAP's world frame), ``ply_file_path`` = ``sparse_pc.ply``, the
  model's points with colours (:mod:`fieldforge.apps.process_sfm`);
- ``process_report.json`` (also printed): images registered, points, mean reprojection error,
  stage times; below :data:`WARN_FRACTION` registered, a warning and the options to try next.

Everything is built in a hidden folder beside DATA and renamed at the end, so a failure leaves
no DATA behind. Fewer than three registered images is an error (with the same advice).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fieldforge.apps.files import staged
from fieldforge.apps.process_inputs import IMAGE_SUFFIXES, MIN_IMAGES, gather_images, gather_video, is_video
from fieldforge.apps.process_sfm import CAMERA_MODELS, MATCHERS, SfmOptions, reconstruct, stats, transforms
from fieldforge.errors import DataError, FieldforgeError
from fieldforge.scenes.loaders import detect_format

DEFAULT_FRAMES = 100  # video frames kept when neither --fps nor --num-frames is given
WARN_FRACTION = 0.8  # warn when fewer than this share of the images register


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="folder of photographs, or a video file")
    p.add_argument("-o", "--output", required=True, help="output dataset folder (must not exist or be empty)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--matcher", choices=MATCHERS, default="exhaustive",
                   help="match every pair, or only neighbours in name order (faster for videos)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fps", type=float, default=None, help="video: keep this many frames per second")
    g.add_argument("--num-frames", type=int, default=None,
                   help=f"video: keep this many frames spread over the video (default {DEFAULT_FRAMES})")
    p.add_argument("--downscales", type=int, nargs="*", default=[2, 4, 8],
                   help="factors of the downscaled image copies images_K (default 2 4 8; none: no copies)")
    p.add_argument("--camera-model", choices=CAMERA_MODELS, default="SIMPLE_RADIAL",
                   help="COLMAP camera model shared by all images")
    p.add_argument("--max-image-size", type=int, default=1024, help="longer side (pixels) SIFT runs at")
    p.add_argument("--num-threads", type=int, default=2, help="CPU threads for pycolmap")
    p.add_argument("--verbose", action="store_true", help="show COLMAP's log")
    p.error = lambda message: p.exit(2, f"{p.prog}: error: {message}\n")  # one line, no usage block


def _check(args: argparse.Namespace, src: Path, out: Path) -> None:
    for name, value, low in (("--fps", args.fps, 0), ("--num-frames", args.num_frames, MIN_IMAGES - 1),
                             ("--max-image-size", args.max_image_size, 0), ("--num-threads", args.num_threads, 0)):
        if value is not None and not value > low:
            raise FieldforgeError(f"{name} must be greater than {low}, got {value}")
    if any(k < 2 for k in args.downscales):
        raise FieldforgeError(f"--downscales factors must be at least 2, got {args.downscales}")
    if not src.exists():
        raise FieldforgeError(f"{src}: not found")
    if out.exists():
        if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
            raise FieldforgeError(f"{out}: holds the input {src}; choose another output folder")
        if not out.is_dir():
            raise FieldforgeError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not args.force:
            raise FieldforgeError(f"{out}: folder exists and is not empty (pass --force to replace it)")
    if not out.parent.is_dir():
        raise FieldforgeError(f"{out.parent}: output's parent folder does not exist")


def advice(args: argparse.Namespace, video: bool, num_images: int, longest_side: int) -> list[str]:
    """Options to try when too few images register, given what was run."""
    tips = []
    if args.matcher == "sequential":
        tips.append("--matcher exhaustive (match every pair, not only neighbours in name order)")
    if video:
        tips.append(f"more frames: --num-frames {2 * num_images} (or a higher --fps) for more overlap between neighbours")
    else:
        tips.append("more photographs with more overlap (every part of the scene in 3+ nearby views)")
    if longest_side > args.max_image_size:
        tips.append(f"--max-image-size {min(longest_side, 2 * args.max_image_size)} (SIFT saw images "
                    f"downscaled to {args.max_image_size} px of {longest_side})")
    else:
        tips.append("higher-resolution images (SIFT already runs at full size)")
    if args.camera_model in ("SIMPLE_PINHOLE", "PINHOLE"):
        tips.append("--camera-model SIMPLE_RADIAL or OPENCV if the lens visibly distorts")
    tips.append("sharp, evenly lit, textured views (blur, reflections and plain walls give no features)")
    return tips


def _summary(report: dict) -> str:
    lines = [f"registered {report['num_registered']} of {report['num_images']} images "
             f"({report['num_models']} model(s) found); {report['num_points']} points; "
             f"mean reprojection error {report['mean_reprojection_error_px']:.3f} px"]
    if report["warning"]:
        lines += [f"warning: {report['warning']}; try:"] + [f"  {t}" for t in report["suggestions"]]
    return "\n".join(lines)


def _build(args: argparse.Namespace, src: Path, tmp: Path) -> dict:
    video = is_video(src)
    num_frames = args.num_frames or (DEFAULT_FRAMES if args.fps is None else None)
    names, size = (gather_video(src, tmp, args.downscales, args.fps, num_frames) if video
                   else gather_images(src, tmp, args.downscales))
    opts = SfmOptions(args.matcher, args.camera_model, args.max_image_size, args.num_threads, args.verbose)
    result = reconstruct(tmp / "images", names, tmp / "colmap", opts)
    rec = result.reconstruction
    registered = 0 if rec is None else rec.num_reg_images()
    tips = advice(args, video, len(names), max(size))
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
    report["options"] = {"matcher": args.matcher, "camera_model": args.camera_model, "max_image_size": args.max_image_size,
                         "num_threads": args.num_threads, "fps": args.fps, "num_frames": num_frames if video else None,
                         "downscales": args.downscales}
    report["seconds"] = {k: round(v, 3) for k, v in result.seconds.items()}
    (tmp / "process_report.json").write_text(json.dumps(report, indent=2))
    return report


def run(args: argparse.Namespace) -> int:
    src, out = Path(args.input), Path(args.output)
    _check(args, src, out)
    with staged(out, force=True) as tmp:  # _check refused an existing output without --force
        tmp.mkdir()
        report = _build(args, src, tmp)
    print(_summary(report))
    print(f"wrote {out} (transforms.json, colmap/sparse/0, sparse_pc.ply, images"
          + "".join(f", images_{k}" for k in args.downscales) + ", process_report.json)")
    return 0


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


def process_default(src: Path, out: Path) -> int:
    """``fieldforge process SRC -o OUT`` with the verb's default options."""
    p = argparse.ArgumentParser(prog="fieldforge process")
    add_arguments(p)
    return run(p.parse_args([str(src), "-o", str(out)]))
