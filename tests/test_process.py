"""``fieldforge process``: pycolmap SfM on views rendered here with known poses, on LLFF fern
(when ../shared/data is present), and its refusals of bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy import ndimage

from fieldforge.apps.cli.main import main
from fieldforge.apps.process.inputs import frame_indices
from fieldforge.scenes import load
from tests.helpers import look_at_c2w

FERN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "llff-fern"
EXTENT = 2.0  # the corner's three faces are squares [0, EXTENT]^2 on the planes x=0, y=0, z=0
W, H, FOCAL = 200, 150, 170.0


def corner_textures(seed: int = 0, size: int = 128) -> list[np.ndarray]:
    """One multi-octave colour noise texture [size, size, 3] in [0, 1] per face (SIFT-friendly)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        t = sum(w * ndimage.zoom(rng.random((c, c, 3)), (size / c, size / c, 1), order=1)
                for c, w in ((4, 1.0), (8, 0.8), (16, 0.6), (32, 0.5), (64, 0.4)))
        t = t - t.min((0, 1))
        out.append(t / t.max((0, 1)))
    return out


def render_corner(c2w: np.ndarray, K: np.ndarray, tex: list[np.ndarray], ss: int = 2) -> np.ndarray:
    """Ray-cast the textured inside corner from an OpenCV camera: uint8 [H, W, 3], grey where
    rays miss, ``ss`` x ``ss`` supersampled (pixel centres at +0.5)."""
    j, i = np.meshgrid((np.arange(H * ss) + 0.5) / ss, (np.arange(W * ss) + 0.5) / ss, indexing="ij")
    d = np.stack([(i - K[0, 2]) / K[0, 0], (j - K[1, 2]) / K[1, 1], np.ones_like(i)], -1) @ c2w[:3, :3].T
    o = c2w[:3, 3]
    img, depth = np.full((H * ss, W * ss, 3), 0.5), np.full((H * ss, W * ss), np.inf)
    for k in range(3):  # face on the plane where coordinate k is 0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[k] / d[..., k]
        p = o + t[..., None] * d
        a, b = [m for m in range(3) if m != k]
        hit = (t > 0) & (t < depth) & (p[..., a] >= 0) & (p[..., a] <= EXTENT) & (p[..., b] >= 0) & (p[..., b] <= EXTENT)
        uv = [p[..., a][hit] / EXTENT * (tex[k].shape[0] - 1), p[..., b][hit] / EXTENT * (tex[k].shape[1] - 1)]
        img[hit] = np.stack([ndimage.map_coordinates(tex[k][..., c], uv, order=1) for c in range(3)], -1)
        depth[hit] = t[hit]
    return (img.reshape(H, ss, W, ss, 3).mean((1, 3)) * 255 + 0.5).astype(np.uint8)


def corner_views(n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``n`` cameras on an arc looking into the corner: c2w [n, 4, 4] (OpenCV), K, images."""
    target = torch.tensor([0.6, 0.6, 0.5])
    c2w = np.stack([look_at_c2w(target + 3.2 * torch.tensor([math.cos(a) * math.cos(0.52), math.sin(a) * math.cos(0.52),
                                                             math.sin(0.52)]), target).double().numpy()
                    for a in np.radians(np.linspace(25, 65, n))])
    K = np.array([[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1.0]])
    tex = corner_textures()
    return c2w, K, [render_corner(m, K, tex) for m in c2w]


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising |s R src + t - dst|^2 over points [N, 3] (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / xs.var(0).sum())
    return s, R, mu_d - s * R @ mu_s


def pose_errors(c2w: np.ndarray, truth: np.ndarray) -> tuple[float, float, tuple]:
    """Largest camera-centre error (as a fraction of the true centres' mean spread) and largest
    rotation error (degrees) after the best similarity alignment; and that alignment."""
    s, R, t = umeyama(c2w[:, :3, 3], truth[:, :3, 3])
    centres = s * c2w[:, :3, 3] @ R.T + t
    spread = np.linalg.norm(truth[:, :3, 3] - truth[:, :3, 3].mean(0), axis=1).mean()
    cos = (np.einsum("nij,nij->n", R @ c2w[:, :3, :3], truth[:, :3, :3]) - 1) / 2
    return (float(np.linalg.norm(centres - truth[:, :3, 3], axis=1).max() / spread),
            float(np.degrees(np.arccos(np.clip(cos, -1, 1))).max()), (s, R, t))


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower() or "Traceback" in line]


@pytest.fixture(scope="module")
def corner(tmp_path_factory):
    """Eight rendered views processed once: (truth c2w, K, source images, output folder)."""
    root = tmp_path_factory.mktemp("corner")
    c2w, K, images = corner_views(8)
    (root / "photos").mkdir()
    for n, img in enumerate(images):
        iio.imwrite(root / "photos" / f"view_{n}.png", img)
    assert main(["process", str(root / "photos"), "-o", str(root / "data"), "--downscales", "2"]) == 0
    return c2w, K, images, root / "data"


def test_corner_poses_points_and_intrinsics_match_the_truth(corner):
    truth, K, _, data = corner
    scene = load(data)
    assert scene.format == "nerfstudio" and len(scene.cameras) == 8
    assert scene.names == [f"images/view_{n}.png" for n in range(8)]
    centre_err, rot_err, (s, R, t) = pose_errors(scene.cameras.c2w.double().numpy(), truth)
    assert centre_err < 0.01 and rot_err < 1.0  # measured about 0.0025 and 0.3-0.55 degrees
    assert torch.allclose(scene.cameras.K[0].double(), torch.from_numpy(K), rtol=0.02)  # measured 0.3-0.9%
    # the seed points, aligned like the cameras, lie on the corner's faces (their planes are x, y or z = 0)
    points = s * scene.points.double().numpy() @ R.T + t
    assert len(points) > 300 and np.median(np.abs(points).min(1)) < 0.02 * EXTENT


def test_corner_outputs_report_and_downscaled_copies(corner):
    _, _, images, data = corner
    report = json.loads((data / "process_report.json").read_text())
    assert report["num_images"] == report["num_registered"] == 8 and report["warning"] is None
    assert 0 < report["mean_reprojection_error_px"] < 0.5
    meta = json.loads((data / "transforms.json").read_text())
    assert meta["ply_file_path"] == "sparse_pc.ply" and (data / "colmap" / "sparse" / "0" / "images.bin").is_file()
    half = iio.imread(data / "images_2" / "view_3.png").astype(np.float64)
    box = images[3].reshape(H // 2, 2, W // 2, 2, 3).astype(np.float64).mean((1, 3))
    assert half.shape == (H // 2, W // 2, 3) and np.abs(half - box).max() <= 0.5 + 1e-9
    assert np.array_equal(iio.imread(data / "images" / "view_3.png"), images[3])
    assert not any(p.name.startswith(".") for p in data.parent.iterdir())  # the temp folder is gone


def test_train_on_photos_processes_them_into_the_run_and_reuses_them(corner, tmp_path, capsys):
    photos = corner[3].parent / "photos"
    run = tmp_path / "run"
    args = ["train", str(photos), "--method", "splat", "--out", str(run), "--steps", "2", "--quiet",
            "--set", "init_num_points=50"]
    assert main(args) == 0
    assert "registered 8 of 8 images" in capsys.readouterr().out
    cfg = json.loads((run / "config.json").read_text())
    assert Path(cfg["train"]["data"]) == run / "data" and load(run / "data").format == "nerfstudio"
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"]) == 0
    stamp = (run / "data" / "transforms.json").stat().st_mtime_ns
    shutil.rmtree(run / "checkpoints")  # a fresh run into the same folder reuses the processed data
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().out and (run / "data" / "transforms.json").stat().st_mtime_ns == stamp


def test_video_frames_are_sampled_evenly_and_posed(tmp_path):
    c2w, _, images = corner_views(12)
    iio.imwrite(tmp_path / "walk.mp4", np.stack(images), plugin="FFMPEG", fps=12, macro_block_size=1, quality=9)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "old.txt").write_text("replaced by --force")
    assert main(["process", str(tmp_path / "walk.mp4"), "-o", str(tmp_path / "data"), "--num-frames", "6",
                 "--downscales", "--matcher", "sequential", "--force"]) == 0
    assert not (tmp_path / "data" / "old.txt").exists()
    scene = load(tmp_path / "data")
    frames = [iio.imread(tmp_path / "data" / n).astype(np.float64) for n in scene.names]
    nearest = [int(np.argmin([np.abs(f - img).mean() for img in images])) for f in frames]
    assert nearest == [0, 2, 4, 7, 9, 11]  # round(linspace(0, 11, 6))
    centre_err, rot_err, _ = pose_errors(scene.cameras.c2w.double().numpy(), c2w[nearest])
    assert centre_err < 0.02 and rot_err < 1.5


def test_frame_indices_by_rate_and_by_count():
    assert frame_indices(95, 30.0, 10.0, None).tolist() == list(range(0, 95, 3))
    assert frame_indices(10, 30.0, 60.0, None).tolist() == list(range(10))
    assert frame_indices(101, 25.0, None, 5).tolist() == [0, 25, 50, 75, 100]
    assert frame_indices(4, 25.0, None, 9).tolist() == [0, 1, 2, 3]


@pytest.mark.skipif(not (FERN / "images_8").is_dir(), reason="../shared/data/llff-fern absent")
def test_fern_subset_agrees_with_poses_bounds(tmp_path, capsys):
    (tmp_path / "fern").mkdir()
    names = [f"image{i:03d}.png" for i in range(8)]
    for n in names:
        (tmp_path / "fern" / n).symlink_to((FERN / "images_8" / n).resolve())
    blank = [f"z{k}.png" for k in range(3)]  # featureless: they cannot register
    for n in blank:
        iio.imwrite(tmp_path / "fern" / n, np.full((378, 504, 3), 128, np.uint8))
    assert main(["process", str(tmp_path / "fern"), "-o", str(tmp_path / "data"), "--matcher", "sequential",
                 "--downscales"]) == 0
    assert "warning: only 8 of 11 images registered (below 80%); try:" in capsys.readouterr().out
    report = json.loads((tmp_path / "data" / "process_report.json").read_text())
    assert report["unregistered"] == blank and "--matcher exhaustive" in report["suggestions"][0]
    scene, ref = load(tmp_path / "data"), load(FERN, downscale=8)
    assert scene.names == [f"images/{n}" for n in names]
    truth = ref.cameras.c2w.double().numpy()[[ref.names.index(n) for n in names]]
    centre_err, rot_err, _ = pose_errors(scene.cameras.c2w.double().numpy(), truth)
    assert centre_err < 0.05 and rot_err < 2.0
    assert abs(float(scene.cameras.K[0, 0, 0] / ref.cameras.K[0, 0, 0]) - 1) < 0.03


def _images(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for k in range(n):
        iio.imwrite(folder / f"img{k}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("case, expected", [
    ("empty", "no images found"),
    ("unreadable", "broken.png: cannot read image"),
    ("two", "only 2 image(s); at least 3"),
    ("sizes", "wide.png: image is 80x48 but img0.png is 64x48"),
    ("unregistered", "only 0 of 3 images registered (need 3); try:"),
    ("video", "clip.mp4: cannot read video"),
])
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path, capsys, case, expected):
    src = _images(tmp_path / "in", {"empty": 0, "two": 2}.get(case, 3))
    if case == "unreadable":
        (src / "broken.png").write_bytes(b"not a png")
    if case == "sizes":
        iio.imwrite(src / "wide.png", np.zeros((48, 80, 3), np.uint8))
    if case == "video":
        src = src / "clip.mp4"
        src.write_bytes(b"not a video")
    assert main(["process", str(src), "-o", str(tmp_path / "out")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("fieldforge process: error: ") and expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # neither the output nor its temp folder


def test_existing_output_needs_force_and_is_kept(tmp_path, capsys):
    src = _images(tmp_path / "in", 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main(["process", str(src), "-o", str(tmp_path / "out")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "out: folder exists and is not empty (pass --force" in lines[0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
    assert main(["process", str(src), "-o", str(tmp_path / "out"), "--force"]) == 2  # noise: nothing registers
    assert "only 0 of 3 images registered" in error_lines(capsys)[0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_train_on_photos_that_do_not_register_is_one_line_and_leaves_no_run(tmp_path, capsys):
    photos = _images(tmp_path / "noise", 3)
    assert main(["train", str(photos), "--method", "splat", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = error_lines(capsys)  # (progress bars aside)
    assert len(err) == 1 and "only 0 of 3 images registered" in err[0] and "try:" in err[0]
    assert not (tmp_path / "run").exists()
