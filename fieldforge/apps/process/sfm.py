"""Structure from motion for ``fieldforge process`` with pycolmap on the CPU: SIFT features,
exhaustive or sequential matching, incremental mapping; and the result as nerfstudio files.

All images share one camera (``CameraMode.SINGLE``: one phone, one video) of the COLMAP model
``camera_model``, its focal length starting from the EXIF value or COLMAP's 1.2 x the longer
side. Poses come out in COLMAP's world frame (arbitrary similarity: neither metric nor
up-aligned); :func:`transforms` keeps that frame and flips only the camera axes to OpenGL.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from tqdm import tqdm

from fieldforge.apps.process.inputs import MIN_IMAGES
from fieldforge.errors import FieldforgeError
from fieldforge.scenes.cameras import opengl_to_opencv
from fieldforge.scenes.loaders import colmap_files as cf
from fieldforge.scenes.loaders.build import natural_key
from fieldforge.scenes.loaders.nerfstudio import DIST_KEYS

if TYPE_CHECKING:
    import pycolmap

MATCHERS = ("exhaustive", "sequential")
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
CHUNK = 4  # images per feature-extraction call: a live progress bar at little cost in speed
#: Cameras.model -> (nerfstudio camera_model, distortion keys it takes)
NERFSTUDIO = {"pinhole": ("PINHOLE", ()), "opencv": ("OPENCV", ("k1", "k2", "k3", "p1", "p2")),
              "opencv_fisheye": ("OPENCV_FISHEYE", ("k1", "k2", "k3", "k4"))}


@dataclass
class SfmOptions:
    matcher: str = "exhaustive"
    camera_model: str = "SIMPLE_RADIAL"
    max_image_size: int = 1024  # SIFT runs on images downscaled to this longer side (pixels)
    num_threads: int = 2
    verbose: bool = False  # show COLMAP's own log


@dataclass
class SfmResult:
    reconstruction: pycolmap.Reconstruction | None  # the model with the most registered images
    num_models: int
    seconds: dict[str, float] = field(default_factory=dict)


def _pycolmap():
    """pycolmap, imported on first use (an optional dependency: the ``apps`` extra)."""
    try:
        import pycolmap
    except ImportError as e:
        raise FieldforgeError(f"process needs pycolmap ({e}); install it with: pip install 'fieldforge[apps]'") from None
    return pycolmap


@contextlib.contextmanager
def _colmap_log(verbose: bool) -> Iterator[None]:
    """Silence COLMAP's info and warning lines (they break the progress bars) unless ``verbose``."""
    pycolmap = _pycolmap()
    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = old if verbose else 2
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


def _extract(database: Path, image_dir: Path, names: list[str], opts: SfmOptions) -> None:
    pycolmap = _pycolmap()
    ex = pycolmap.FeatureExtractionOptions()
    ex.num_threads, ex.max_image_size = opts.num_threads, opts.max_image_size
    with tqdm(total=len(names), desc="features", unit="img") as bar:
        for start in range(0, len(names), CHUNK):
            reader = pycolmap.ImageReaderOptions()
            reader.camera_model = opts.camera_model
            if start:
                reader.existing_camera_id = 1  # the single camera the first call created
            chunk = names[start:start + CHUNK]
            pycolmap.extract_features(database, image_dir, image_names=chunk, camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=ex, device=pycolmap.Device.cpu)
            bar.update(len(chunk))


def _match(database: Path, opts: SfmOptions) -> None:
    pycolmap = _pycolmap()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = opts.num_threads
    with tqdm(total=1, desc=f"matching ({opts.matcher})", unit="stage") as bar:
        if opts.matcher == "exhaustive":
            pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
        else:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.num_threads = opts.num_threads
            pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                      device=pycolmap.Device.cpu)
        bar.update(1)


def _map(database: Path, image_dir: Path, scratch: Path, n: int, opts: SfmOptions) -> dict[int, pycolmap.Reconstruction]:
    pycolmap = _pycolmap()
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = opts.num_threads
    mapping.min_model_size = MIN_IMAGES  # keep models of small image sets
    mapping.random_seed = 0
    with tqdm(total=n, desc="mapping", unit="img") as bar:
        def registered(k: int) -> None:  # counts may pass n when several models are tried
            bar.update(min(k, bar.total - bar.n))

        return pycolmap.incremental_mapping(database, image_dir, scratch, options=mapping,
                                            initial_image_pair_callback=lambda: registered(2),
                                            next_image_callback=lambda: registered(1))


def reconstruct(image_dir: Path, names: list[str], colmap_dir: Path, opts: SfmOptions) -> SfmResult:
    """Run SfM on ``names`` in ``image_dir``, keeping ``colmap_dir/database.db``; the models
    incremental mapping writes go to a scratch folder there and are deleted."""
    colmap_dir.mkdir(parents=True, exist_ok=True)
    database, scratch = colmap_dir / "database.db", colmap_dir / "models"
    stages = {"features": lambda: _extract(database, image_dir, names, opts),
              "matching": lambda: _match(database, opts),
              "mapping": lambda: _map(database, image_dir, scratch, len(names), opts)}
    seconds = {}
    with _colmap_log(opts.verbose):
        for stage, step in stages.items():
            t = time.perf_counter()
            models = step()  # the last stage's result: the mapped models
            seconds[stage] = time.perf_counter() - t
    shutil.rmtree(scratch, ignore_errors=True)
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    return SfmResult(best, len(models), seconds)


def transforms(sparse: Path, image_folder: str = "images") -> dict:
    """nerfstudio ``transforms.json`` content of the COLMAP model in ``sparse`` (one camera):
    top-level intrinsics in pixels, frames in natural name order with ``file_path``
    ``image_folder/NAME`` and the OpenGL camera-to-world ``transform_matrix``."""
    cam_file, img_file = cf.find_file(sparse, "cameras"), cf.find_file(sparse, "images")
    ((cam_id, cam),) = cf.read_cameras(cam_file).items()
    by_id = sorted(cf.read_images(img_file).items(), key=lambda kv: natural_key(kv[1].name))
    (fx, fy, cx, cy), dist, model = cf.intrinsics(cam_file, cam_id, cam)
    name, keys = NERFSTUDIO[model]
    c2w = opengl_to_opencv(cf.camera_to_world([im for _, im in by_id]))  # the axis flip is its own inverse
    meta = {"camera_model": name, "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": cam.width, "h": cam.height,
            **{k: v for k, v in zip(DIST_KEYS, dist) if k in keys}}
    meta["frames"] = [{"file_path": f"{image_folder}/{im.name}", "transform_matrix": m.tolist(), "colmap_im_id": i}
                      for (i, im), m in zip(by_id, c2w.numpy())]
    return meta


def stats(rec: pycolmap.Reconstruction) -> dict:
    """Numbers of the report: registered images (and their names), 3D points, mean reprojection
    error (pixels, over all observations) and mean track length (observations per point)."""
    return {"num_registered": rec.num_reg_images(),
            "registered": sorted((rec.image(i).name for i in rec.reg_image_ids()), key=natural_key),
            "num_points": rec.num_points3D(),
            "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
            "mean_track_length": float(rec.compute_mean_track_length())}
