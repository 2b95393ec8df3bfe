"""Bad datasets raise DataError with a one-line message naming the offending file."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fieldforge.errors import DataError, FieldforgeError
from fieldforge.scenes import load

POSE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]


def _png(path: Path, w=8, h=6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.zeros((h, w, 4), np.uint8))


def blender(root: Path, n=2, **edit) -> Path:
    """A tiny valid Blender dataset; ``edit`` maps split -> function(meta) that breaks it."""
    for split in ("train", "test"):
        frames = [{"file_path": f"./{split}/r_{k}", "transform_matrix": POSE} for k in range(n)]
        for k in range(n):
            _png(root / split / f"r_{k}.png")
        meta = {"camera_angle_x": 0.7, "frames": frames}
        if split in edit:
            edit[split](meta)
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def nerfstudio(root: Path, n=9, edit=None) -> Path:
    frames = [{"file_path": f"im/{k}.png", "transform_matrix": POSE} for k in range(n)]
    for k in range(n):
        _png(root / "im" / f"{k}.png")
    meta = {"fl_x": 10.0, "w": 8, "h": 6, "frames": frames}
    if edit:
        edit(meta)
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def _raises(root, names: str | Path, *words, **kw) -> str:
    with pytest.raises(DataError) as e:
        load(root, **kw)
    msg = str(e.value)
    assert "\n" not in msg and str(names) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_valid_fixtures_load(tmp_path):
    assert len(load(blender(tmp_path / "b"))) == 4 and len(load(nerfstudio(tmp_path / "n"))) == 9


def test_missing_folder_and_unknown_format(tmp_path):
    _raises(tmp_path / "nope", tmp_path / "nope", "not found")
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", tmp_path / "empty", "unknown dataset format")
    _raises(tmp_path / "empty", tmp_path / "empty" / "transforms.json", "not found", format="nerfstudio")


def test_bad_api_arguments(tmp_path):
    with pytest.raises(FieldforgeError, match="unknown format"):
        load(tmp_path, format="pickle")
    with pytest.raises(FieldforgeError, match="downscale"):
        load(tmp_path, downscale=0)


def test_malformed_json(tmp_path):
    root = blender(tmp_path)
    (root / "transforms_test.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    _raises(root, root / "transforms_test.json", "malformed JSON")
    root = nerfstudio(tmp_path / "n")
    (root / "transforms.json").write_text("[1, 2]")
    _raises(root, root / "transforms.json", "malformed JSON")


def test_missing_and_unreadable_images(tmp_path):
    root = blender(tmp_path / "a")
    (root / "train" / "r_1.png").unlink()
    _raises(root, root / "train" / "r_1.png", "not found")
    root = nerfstudio(tmp_path / "b")
    (root / "im" / "3.png").write_bytes(b"this is not a png")
    _raises(root, root / "im" / "3.png", "cannot read image")


def test_image_size_disagrees_with_intrinsics(tmp_path):
    root = nerfstudio(tmp_path / "n")
    _png(root / "im" / "4.png", w=9, h=6)
    _raises(root, root / "im" / "4.png", "9x6", "8x6")
    root = blender(tmp_path / "b", train=lambda m: m.update(w=16, h=6))
    _raises(root, root / "train" / "r_0.png", "8x6", "16x6")


def test_non_finite_poses(tmp_path):
    def nan(meta):
        meta["frames"][1]["transform_matrix"] = [[float("nan")] * 4] + POSE[1:]
    root = blender(tmp_path / "b", test=nan)
    _raises(root, root / "transforms_test.json", "non-finite")
    root = nerfstudio(tmp_path / "n", edit=nan)
    _raises(root, root / "transforms.json", "non-finite")
    llff = tmp_path / "llff"
    arr = np.tile(np.r_[np.eye(3, 5).reshape(-1), 1, 2].astype(np.float64), (2, 1))
    arr[:, [4, 9, 14]] = [6, 8, 10]
    arr[1, 3] = np.inf
    llff.mkdir()
    np.save(llff / "poses_bounds.npy", arr)
    _raises(llff, llff / "poses_bounds.npy", "non-finite")


@pytest.mark.parametrize("key", ["file_path", "mask_path", "ply_file_path"])
def test_paths_escaping_the_dataset(tmp_path, key):
    def escape(meta):
        if key == "ply_file_path":
            meta[key] = "../../etc/passwd"
        else:
            for f in meta["frames"]:
                f.setdefault("mask_path", "im/0.png")
            meta["frames"][2][key] = "../../etc/passwd"
    root = nerfstudio(tmp_path, edit=escape)
    _raises(root, root / "transforms.json", "escapes the dataset folder")


def test_blender_escaping_path(tmp_path):
    root = blender(tmp_path, train=lambda m: m["frames"][0].update(file_path="/etc/passwd"))
    _raises(root, root / "transforms_train.json", "escapes the dataset folder")


def test_empty_split(tmp_path):
    root = blender(tmp_path / "b", test=lambda m: m.update(frames=[]))
    _raises(root, root / "transforms_test.json", "empty")
    root = nerfstudio(tmp_path / "n", edit=lambda m: m.update(train_filenames=["im/0.png"], test_filenames=[]))
    _raises(root, root / "transforms.json", "split 'test' is empty")
    root = nerfstudio(tmp_path / "one", n=1)  # one image: the every-8th rule leaves no training image
    _raises(root, root / "transforms.json", "split 'train' is empty")


def test_dnerf_time_errors(tmp_path):
    def some(meta):
        meta["frames"][0]["time"] = 0.0
    root = blender(tmp_path / "a", train=some)
    _raises(root, root / "transforms_train.json", "time", "all or none")

    def every(meta):
        for k, f in enumerate(meta["frames"]):
            f["time"] = float(k)
    root = blender(tmp_path / "b", train=every)  # the test split has no times at all
    _raises(root, root / "transforms_test.json", "no 'time'")
    root = blender(tmp_path / "c", train=every, test=lambda m: [f.update(time=1.5) for f in m["frames"]])
    _raises(root, root / "transforms_test.json", "[0, 1]")


def test_missing_focal_and_bad_lens(tmp_path):
    root = nerfstudio(tmp_path / "a", edit=lambda m: m.pop("fl_x"))
    _raises(root, root / "transforms.json", "no focal length")
    root = nerfstudio(tmp_path / "b", edit=lambda m: m.update(camera_model="EQUIRECTANGULAR"))
    _raises(root, root / "transforms.json", "unsupported camera_model")
    root = blender(tmp_path / "c", train=lambda m: m.pop("camera_angle_x"))
    _raises(root, root / "transforms_train.json", "camera_angle_x")


def test_llff_image_count_mismatch(tmp_path):
    arr = np.tile(np.r_[np.eye(3, 5).reshape(-1), 1, 2].astype(np.float64), (3, 1))
    arr[:, [4, 9, 14]] = [6, 8, 10]
    np.save(tmp_path / "poses_bounds.npy", arr)
    for k in range(2):
        _png(tmp_path / "images" / f"{k}.png")
    _raises(tmp_path, tmp_path / "images", "2 images", "3 poses")
    (tmp_path / "images").rename(tmp_path / "images_8")
    _raises(tmp_path, tmp_path / "images", "image folder not found", "images_8")
