"""A 3DGS .ply from another trainer: cameras from its cameras.json or a ring around the Gaussians,
rendered along an orbit by ``fieldforge render`` and opened by the viewer."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldforge.apps.cli import main as cli
from fieldforge.apps.training.ply_scene import find_cameras_json, ply_scene, read_cameras_json, ring_cameras
from fieldforge.apps.viewer.server import Viewer
from fieldforge.fields import splat_ply
from fieldforge.render.rasterize import render_gaussians
from fieldforge.scenes import paths
from tests.helpers import ring_cameras as helper_ring
from tests.test_splat_scenes import random_gaussians


def _write_cameras_json(path, cams):
    """The reference 3DGS trainer's layout: centre, camera-to-world rotation rows, fx, fy."""
    entries = [{"id": i, "img_name": f"{i:05d}", "width": int(cams.width[i]), "height": int(cams.height[i]),
                "position": cams.c2w[i, :3, 3].tolist(), "rotation": cams.c2w[i, :3, :3].tolist(),
                "fx": float(cams.K[i, 0, 0]), "fy": float(cams.K[i, 1, 1])} for i in range(len(cams))]
    path.write_text(json.dumps(entries))


@pytest.fixture
def model_folder(tmp_path):
    """MODEL/cameras.json beside MODEL/point_cloud/iteration_7/point_cloud.ply, as 3DGS writes them."""
    cams = helper_ring(6, size=20)
    ply = tmp_path / "model" / "point_cloud" / "iteration_7" / "point_cloud.ply"
    ply.parent.mkdir(parents=True)
    splat_ply.write(ply, random_gaussians(40, seed=5, spread=0.8))
    _write_cameras_json(tmp_path / "model" / "cameras.json", cams)
    return ply, cams


def test_cameras_json_is_found_two_folders_up_and_read_back(model_folder):
    ply, cams = model_folder
    found = find_cameras_json(ply)
    assert found == ply.parents[2] / "cameras.json"
    back = read_cameras_json(found)
    assert torch.allclose(back.c2w, cams.c2w, atol=1e-6) and torch.allclose(back.K, cams.K)
    assert torch.equal(back.width, cams.width) and torch.equal(back.height, cams.height)


def test_orbit_of_a_ply_uses_its_cameras_and_matches_the_rasterizer(model_folder, tmp_path, capsys):
    ply, cams = model_folder
    out = tmp_path / "frames"
    assert cli.main(["render", str(ply), "--path", "orbit", "--frames", "3", "-o", str(out)]) == 0
    assert "cameras from" in capsys.readouterr().out
    files = sorted(out.glob("*.png"))
    orbit = paths.orbit(cams, 3)  # the orbit a run with these training cameras would get
    assert len(files) == 3
    model = splat_ply.read(ply)
    for k in (0, 2):
        with torch.no_grad():
            ref, _, _ = render_gaussians(model, orbit[k].viewmats(), orbit.K[k:k + 1], 20, 20, backgrounds=torch.ones(1, 3))
        frame = iio.imread(files[k]).astype(np.float64) / 255
        assert np.abs(frame - ref[0].clamp(0, 1).numpy()).max() < 1.5 / 255


def test_ring_without_cameras_circles_the_median_above_the_ground_plane():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(2000, 3, generator=g) * torch.tensor([3.0, 2.0, 0.1]) + torch.tensor([1.0, -2.0, 0.5])
    cams = ring_cameras(means, n=8, size=32)
    center = means.double().median(0).values
    radius = 2.0 * float(torch.quantile((means.double() - center).norm(dim=-1), 0.9))
    eyes = cams.c2w[:, :3, 3].double()
    assert torch.allclose((eyes - center).norm(dim=-1), torch.full((8,), radius, dtype=torch.float64), rtol=1e-5)
    # optical axes pass through the centre; the up axis is the least spread one (z), 20 degrees up
    forward = cams.c2w[:, :3, 2].double()
    to_center = (center - eyes) / (center - eyes).norm(dim=-1, keepdim=True)
    assert torch.allclose(forward, to_center, atol=1e-5)
    elevation = torch.asin((eyes[:, 2] - center[2]).abs() / radius)
    assert torch.allclose(elevation, torch.full((8,), math.radians(20.0), dtype=torch.float64), atol=0.02)


def test_view_opens_a_ply(tmp_path):
    ply = tmp_path / "scene.ply"
    splat_ply.write(ply, random_gaussians(30, seed=2))
    method, scene, note = ply_scene(ply, torch.device("cpu"))
    assert "no cameras.json" in note and len(scene.cameras) == len(scene.images) > 0
    viewer = Viewer(method, scene, port=0, path_file=tmp_path / "path.json")
    try:
        assert viewer.channels[:3] == ["rgb", "depth", "opacity"] and len(viewer.frustums) == len(scene.cameras)
    finally:
        viewer.stop()


@pytest.mark.parametrize("content, needle", [
    ("[]", "non-empty JSON list"),
    ("{not json", "unreadable camera list"),
    ('[{"width": 4, "height": 4, "fx": 1, "fy": 1, "position": [0, 0], "rotation": [[1, 0, 0]]}]', "camera 0"),
    ('[{"width": 4, "height": 4, "fx": -1, "fy": 1, "position": [0, 0, 0], '
     '"rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]', "fx, fy > 0"),
])
def test_bad_cameras_json_is_one_line_naming_the_file(tmp_path, capsys, content, needle):
    ply = tmp_path / "scene.ply"
    splat_ply.write(ply, random_gaussians(10, seed=1))
    (tmp_path / "cameras.json").write_text(content)
    assert cli.main(["render", str(ply), "--frames", "2", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cameras.json" in err and needle in err and "\n" not in err


def test_a_ply_without_gaussians_is_refused_on_one_line(tmp_path, capsys):
    from fieldforge.fields.gaussians import GaussianModel

    ply = tmp_path / "empty.ply"
    splat_ply.write(ply, GaussianModel(0, 0))
    assert cli.main(["render", str(ply), "--frames", "2", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty.ply" in err and "no Gaussians" in err and "\n" not in err


def test_weighted_median_follows_the_opaque_gaussians():
    from fieldforge.apps.training.ply_scene import weighted_median

    values = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    assert weighted_median(values, torch.ones(5)).item() == 2.0
    assert weighted_median(values, torch.tensor([0.1, 0.1, 0.1, 0.1, 5.0])).item() == 10.0


def test_ring_follows_a_given_up_axis():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(500, 3, generator=g)
    up = torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2)
    cams = ring_cameras(means, up=up, n=6, size=16)
    center = means.double().median(0).values
    rel = cams.c2w[:, :3, 3].double() - center
    sin_elev = (rel @ up.double()) / rel.norm(dim=-1)
    assert torch.allclose(sin_elev, torch.full((6,), math.sin(math.radians(20.0)), dtype=torch.float64), atol=1e-5)
    # the image's up (-y in OpenCV camera axes) leans towards the world's up
    assert ((-cams.c2w[:, :3, 1].double()) @ up.double() > 0.5).all()


def _foreign_ply(path, normals: bool):
    """A .ply as the reference 3DGS trainer lays it out: SH degree 3 (45 f_rest), optional normals."""
    from plyfile import PlyData, PlyElement

    g = torch.Generator().manual_seed(4)
    n = 60
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else []) + ["f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    rows = np.zeros(n, dtype=[(k, "<f4") for k in names])
    for k in names:
        rows[k] = torch.randn(n, generator=g).numpy() * 0.1
    for k in ("x", "y", "z"):
        rows[k] = (torch.rand(n, generator=g).numpy() - 0.5) * 2
    rows["opacity"], rows["rot_0"] = 2.0, 1.0
    rows["scale_0"] = rows["scale_1"] = rows["scale_2"] = math.log(0.15)
    PlyData([PlyElement.describe(rows, "vertex")], byte_order="<").write(str(path))


@pytest.mark.parametrize("normals", [False, True])
def test_orbit_of_another_trainers_ply_with_up(tmp_path, capsys, normals):
    ply = tmp_path / "foreign.ply"
    _foreign_ply(ply, normals)
    assert splat_ply.read(ply).shN.shape[1] == 15  # SH degree 3
    out = tmp_path / "frames"
    assert cli.main(["render", str(ply), "--frames", "2", "--up", "0,0,1", "--background", "black",
                     "-o", str(out)]) == 0
    assert "up = [0.0, 0.0, 1.0]" in capsys.readouterr().out
    frames = [iio.imread(f) for f in sorted(out.glob("*.png"))]
    assert len(frames) == 2 and all(f.shape == (512, 512, 3) and f.max() > 50 for f in frames)  # Gaussians in view
    assert cli.main(["render", str(ply), "--up", "0,0", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--up" in err and "\n" not in err
