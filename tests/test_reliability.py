"""Regression tests of hostile inputs and faults: each is refused on one line (exit 2 from the
CLI) before anything large is allocated, and no user file or run is lost or half written."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fieldforge.apps.training import trainer
from fieldforge.apps.training.checkpoint import load_safe
from fieldforge.apps.cli.main import main
from fieldforge.apps.training.config import TrainConfig
from fieldforge.apps.training.files import staged
from fieldforge.apps.training.run import LOCK_NAME, RunDir
from fieldforge.errors import DataError, FieldforgeError
from fieldforge.limits import MAX_FRAMES, MAX_PIXELS
from fieldforge.scenes import load
from fieldforge.scenes.images import read_image
from fieldforge.scenes.paths import load_path
from tests.test_scenes_colmap import CAMERAS, _scene, write_bin, write_images
from tests.test_scenes_errors import blender, nerfstudio
from tests.test_trainer import _method, _params


def _one_line_error(capsys, code: int, *words: str) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def ngp_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("rel") / "ngp"
    assert main(["train", "--method", "ngp", "-o", str(run), "--steps", "2", "--quiet", "--downscale", "4",
                 "--set", "n_levels=2", "--set", "log2_hashmap_size=10", "--set", "grid_resolution=16"]) == 0
    return run


# -------------------------------------------------------------- camera paths and render outputs
def _path_json(tmp_path: Path, **top) -> Path:
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -4], [0, 0, 0, 1]]
    data = {"width": 16, "height": 12, "keyframes": [{"c2w": c2w, "fov": 50}], **top}
    p = tmp_path / "path.json"
    p.write_text(json.dumps(data))
    return p


def test_camera_path_sizes_are_refused_before_allocating(tmp_path):
    with pytest.raises(DataError, match=f"'frames' must be an integer in \\[1, {MAX_FRAMES}\\]"):
        load_path(_path_json(tmp_path, frames=10**9))
    with pytest.raises(DataError, match="a frame of 100000x100000 pixels is larger than the limit"):
        load_path(_path_json(tmp_path, width=100000, height=100000))
    assert len(load_path(_path_json(tmp_path, frames=7))) == 7


def test_render_refuses_huge_paths_and_existing_outputs_without_leaving_files(ngp_run, tmp_path, capsys):
    out = tmp_path / "new" / "frames"
    code = main(["render", str(ngp_run), "--path", str(_path_json(tmp_path, width=100000, height=100000)),
                 "-o", str(out)])
    _one_line_error(capsys, code, "larger than the limit")
    assert not (tmp_path / "new").exists()
    _one_line_error(capsys, main(["render", str(ngp_run), "--frames", str(10**9), "-o", str(out)]), "--frames")
    # an existing output is kept without --force and replaced with it, never half written
    video = tmp_path / "v.gif"
    video.write_bytes(b"user data")
    _one_line_error(capsys, main(["render", str(ngp_run), "--frames", "2", "-o", str(video)]), "already exists")
    assert video.read_bytes() == b"user data"
    assert main(["render", str(ngp_run), "--frames", "2", "--resolution", "8x6", "-o", str(video), "--force"]) == 0
    assert video.read_bytes()[:3] == b"GIF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["path.json", "v.gif"]


def test_staged_output_leaves_nothing_on_failure_and_keeps_the_old(tmp_path):
    out = tmp_path / "a" / "b" / "out.txt"
    with pytest.raises(RuntimeError), staged(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert not (tmp_path / "a").exists()
    out.parent.mkdir(parents=True)
    out.write_text("old")
    with pytest.raises(FieldforgeError, match="already exists"), staged(out):
        pass
    with pytest.raises(RuntimeError), staged(out, force=True) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert out.read_text() == "old" and sorted(p.name for p in out.parent.iterdir()) == ["out.txt"]
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "00000.png").write_text("old frame")
    with staged(folder, force=True) as tmp:
        tmp.mkdir()
        (tmp / "00000.png").write_text("new frame")
    assert [p.read_text() for p in folder.iterdir()] == ["new frame"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "frames"]


# -------------------------------------------------------------- runs are owned
def test_train_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    code = main(["train", "-o", str(mine), "--steps", "1", "--quiet"])
    _one_line_error(capsys, code, str(mine), "not a fieldforge run")
    assert (mine / "config.json").read_text() == '{"my": "settings"}' and sorted(os.listdir(mine)) == ["config.json"]


def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(ngp_run, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = ngp_run / LOCK_NAME
    try:
        lock.write_text(f"{holder.pid}\n")
        code = main(["train", "-o", str(ngp_run), "--resume", "--steps", "3", "--quiet"])
        _one_line_error(capsys, code, f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "-o", str(ngp_run), "--resume", "--steps", "3", "--quiet"]) == 0  # stale: taken over
    assert not lock.exists() and load_safe(RunDir(ngp_run).checkpoint)["step"] == 3


@pytest.mark.parametrize("flags,word", [(["--method", "splat"], "--method ngp"), (["--downscale", "2"], "--downscale 4"),
                                        (["--set", "lr=1"], "--set"), (["--seed", "3"], "--seed 0")])
def test_resume_refuses_flags_that_change_the_run(ngp_run, capsys, flags, word):
    before = RunDir(ngp_run).config.read_text()
    code = main(["train", "-o", str(ngp_run), "--resume", "--steps", "9", "--quiet", *flags])
    _one_line_error(capsys, code, word)
    assert RunDir(ngp_run).config.read_text() == before


def test_checkpoint_of_another_method_and_bad_config_values(ngp_run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads(RunDir(ngp_run).config.read_text())
    (other / "checkpoints").mkdir()
    state = torch.load(RunDir(ngp_run).checkpoint, weights_only=True)
    torch.save({**state, "method_name": "splat"}, other / "checkpoints" / "last.pt")
    (other / "config.json").write_text(json.dumps(cfg))
    _one_line_error(capsys, main(["eval", str(other)]), "last.pt", "checkpoint is of method 'splat'")
    del state["method_name"]  # an older checkpoint: its state does not fit
    state["method"]["field"] = {"w": torch.zeros(1)}
    torch.save(state, other / "checkpoints" / "last.pt")
    _one_line_error(capsys, main(["eval", str(other)]), "does not fit method 'ngp'")
    cfg["train"]["steps"] = "many"
    (other / "config.json").write_text(json.dumps(cfg))
    _one_line_error(capsys, main(["eval", str(other)]), "config.json", "TrainConfig.steps must be")


def test_full_disk_names_the_checkpoint_kept(tmp_path, monkeypatch):
    cfg = TrainConfig(method="nerf", steps=6, checkpoint_seconds=0.0)
    run = RunDir(tmp_path)
    trainer.train(_method(), run, cfg, 3, quiet=True)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "save_atomic", full)
    with pytest.raises(FieldforgeError, match="cannot write the checkpoint of step 4 .No space left on device.; "
                                              "the checkpoint of step 3 is kept"):
        trainer.train(_method(), run, cfg, 6, resume=True, quiet=True)
    assert load_safe(run.checkpoint)["step"] == 3


def test_sigterm_saves_a_final_checkpoint_and_resume_stays_exact(tmp_path):
    cfg = TrainConfig(method="nerf", steps=12, log_every=1)
    full = _method()
    trainer.train(full, RunDir(tmp_path / "a"), cfg, 12, quiet=True)
    m = _method()
    original = m.train_step

    def step(i):
        if i == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during step 4, which still completes
        return original(i)

    m.train_step = step
    summary = trainer.train(m, RunDir(tmp_path / "b"), cfg, 12, quiet=True)
    assert summary["stopped_by"] == "SIGTERM" and summary["signal"] == signal.SIGTERM and summary["step"] == 5
    assert load_safe(RunDir(tmp_path / "b").checkpoint)["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = _method()
    trainer.train(resumed, RunDir(tmp_path / "b"), cfg, 12, resume=True, quiet=True)
    for k, v in _params(full).items():
        assert torch.equal(v, _params(resumed)[k]), k


def test_sigint_of_the_train_command_exits_130_with_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fieldforge.apps.cli.main", "train", "--method", "nerf", "-o", str(run),
                             "--steps", "100000", "--quiet", "--downscale", "4", "--set", "width=16", "--set", "depth=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = RunDir(run).log
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    step = json.loads(out.strip().splitlines()[-1])["step"]
    assert step >= 25 and load_safe(RunDir(run).checkpoint)["step"] == step
    assert f"stopped by SIGINT at step {step}" in err and not (run / LOCK_NAME).exists()


# -------------------------------------------------------------- images and datasets
def test_cmyk_exif_and_oversized_images(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=100)
    want = np.asarray(Image.open(cmyk).convert("RGB"))
    got = read_image(cmyk)
    assert got.shape == (6, 8, 3) and np.array_equal(got.numpy(), want)
    rotated = tmp_path / "exif.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(rotated, exif=exif)
    assert np.array_equal(read_image(rotated).numpy(), np.rot90(rgb, -1))
    big = tmp_path / "big.png"
    Image.new("L", (1, 1)).save(big)
    data = bytearray(big.read_bytes())  # the header claims 12000 x 12000 (IHDR data at byte 16, CRC at 29)
    data[16:24] = struct.pack(">II", 12000, 12000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    big.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"12000x12000 pixels is larger than the limit of {MAX_PIXELS:,}"):
        read_image(big)


def test_colmap_overclaimed_points_and_negative_focal(tmp_path):
    images, pts, rgb = _scene()
    write_bin(tmp_path / "a" / "sparse" / "0", CAMERAS, images, pts, rgb)
    write_images(tmp_path / "a", images)
    pfile = tmp_path / "a" / "sparse" / "0" / "points3D.bin"
    pfile.write_bytes(struct.pack("<Q", 10**12) + pfile.read_bytes()[8:])
    with pytest.raises(DataError, match="claims 1000000000000 points"):
        load(tmp_path / "a")
    bad = {3: ("PINHOLE", [-70.0, 72.0, 31.5, 24.5]), 9: CAMERAS[9]}
    write_bin(tmp_path / "b" / "sparse" / "0", bad, images, pts, rgb)
    write_images(tmp_path / "b", images)
    with pytest.raises(DataError, match="focal length must be positive"):
        load(tmp_path / "b")


def test_field_of_view_above_half_a_turn_and_downscale_limits(tmp_path, capsys):
    with pytest.raises(DataError, match="camera_angle_x must be below pi"):
        load(blender(tmp_path / "bl", train=lambda m: m.update(camera_angle_x=4.0)))
    with pytest.raises(DataError, match="x_fov must be below 180"):
        load(nerfstudio(tmp_path / "ns", edit=lambda m: (m.pop("fl_x"), m.update(x_fov=200.0))))
    with pytest.raises(DataError, match="downscale 1000 is larger than the smallest image side"):
        load(blender(tmp_path / "bl2"), downscale=1000)
    _one_line_error(capsys, main(["train", str(tmp_path / "bl2"), "--downscale", "0", "-o", str(tmp_path / "r")]),
                    "downscale must be an integer >= 1")
    assert not (tmp_path / "r").exists()


def test_singular_dtu_camera_and_truncated_npz(tmp_path):
    root = tmp_path / "dtu"
    (root / "image").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(root / "image" / "000.png")
    np.savez(root / "cameras.npz", world_mat_0=np.zeros((4, 4)))
    with pytest.raises(DataError, match="world_mat_0 @ scale_mat_0: singular projection matrix"):
        load(root)
    data = (root / "cameras.npz").read_bytes()
    (root / "cameras.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cameras.npz: cannot read"):
        load(root, format="dtu")


# -------------------------------------------------------------- viewer
def test_a_taken_port_is_an_error_and_port_0_picks_a_free_one():
    from fieldforge.apps.viewer.session import claim_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        with pytest.raises(FieldforgeError, match=f"--port {taken}: cannot listen on 127.0.0.1"):
            claim_port("127.0.0.1", taken)
    assert claim_port("127.0.0.1", 0) > 0


def test_a_dataset_larger_than_the_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    from fieldforge import limits

    root = blender(tmp_path / "bl")
    monkeypatch.setattr(limits, "available_memory", lambda: 100)  # bytes
    with pytest.raises(DataError, match=r"4 images decoded needs about 0.0 GiB, more than the 0.0 GiB available"):
        load(root)


def test_resume_of_a_bundled_scene_run_refuses_other_data(ngp_run, tmp_path, capsys):
    code = main(["train", str(tmp_path), "-o", str(ngp_run), "--resume", "--steps", "9", "--quiet"])
    _one_line_error(capsys, code, "--resume continues the run on its own data (the bundled scene)")
