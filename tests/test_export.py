"""``fieldforge export``: a trained splat run to a 3DGS .ply, a point cloud and a camera path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldforge.apps.cli import main
from fieldforge.apps.run import load_run
from fieldforge.fields import splat_ply
from fieldforge.fields.gaussians import SH_C0
from fieldforge.render.paths import load_path


@pytest.fixture(scope="module")
def splat_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "splat"
    assert main(["train", "--method", "splat", "--out", str(run), "--steps", "3", "--downscale", "4", "--quiet",
                 "--set", "init_num_points=300"]) == 0
    return run


def test_splat_ply_round_trips_the_trained_gaussians(splat_run, tmp_path, capsys):
    out = tmp_path / "scene.ply"
    assert main(["export", str(splat_run), "--format", "splat-ply", "-o", str(out)]) == 0
    method, _, _ = load_run(splat_run)
    back = splat_ply.read(out)
    for name in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        assert torch.equal(getattr(back, name), getattr(method.model, name).detach()), name
    assert f"{len(method.model)} Gaussians" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed away


def test_points_and_cameras(splat_run, tmp_path):
    import trimesh

    method, _, _ = load_run(splat_run)
    assert main(["export", str(splat_run), "--format", "points", "-o", str(tmp_path / "pts.ply")]) == 0
    pc = trimesh.load(tmp_path / "pts.ply")
    np.testing.assert_allclose(pc.vertices, method.model.means.detach().numpy(), atol=1e-6)
    rgb = (0.5 + SH_C0 * method.model.sh0.detach().reshape(-1, 3).numpy()).clip(0, 1) * 255
    np.testing.assert_allclose(pc.colors[:, :3].astype(float), rgb, atol=0.51)
    assert main(["export", str(splat_run), "--format", "cameras", "-o", str(tmp_path / "cams.json")]) == 0
    cams = load_path(tmp_path / "cams.json")
    assert torch.allclose(cams.c2w, method.cameras.c2w, atol=1e-5) and torch.allclose(cams.K, method.cameras.K)


def test_errors_are_one_line_and_keep_existing_files(splat_run, tmp_path, capsys):
    out = tmp_path / "keep.ply"
    out.write_bytes(b"user data")
    assert main(["export", str(splat_run), "--format", "splat-ply", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"user data"
    assert main(["export", str(tmp_path / "nope"), "--format", "splat-ply", "-o", str(tmp_path / "a.ply")]) == 2
    err = capsys.readouterr().err
    assert "run directory not found" in err and len(err.strip().splitlines()) == 1
    assert main(["export", str(splat_run), "--format", "splat-ply", "-o", str(tmp_path / "no" / "a.ply")]) == 2
    assert "does not exist" in capsys.readouterr().err
