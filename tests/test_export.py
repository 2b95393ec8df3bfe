"""``fieldforge export``: splat runs to a 3DGS .ply, Gaussian centres and a camera path; fields
to meshes; any method to a rendered point cloud; fields to an approximate 3DGS .ply.

Geometry tests use an analytic sphere field (known surface and colours) inside a real
``RadianceMethod`` (the shared ray marcher renders it), handed to the CLI in place of a run."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fieldforge.apps.export import formats as export
from fieldforge.apps.cli.main import main
from fieldforge.apps.export.mesh import grid_shape
from fieldforge.apps.export.points import render_points, unproject
from fieldforge.apps.training.methods.radiance import RadianceConfig, RadianceMethod
from fieldforge.apps.training.methods.splat import SplatConfig, SplatMethod
from fieldforge.apps.training.run import load_run
from fieldforge.fields import splat_ply
from fieldforge.fields.base import Field
from fieldforge.fields.gaussians import SH_C0, rgb_to_sh0
from fieldforge.render.rasterize import render_gaussians
from fieldforge.scenes import Cameras
from fieldforge.scenes.paths import load_path
from fieldforge.scenes.rays import camera_rays
from tests.helpers import look_at_c2w, tiny_scene


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
    assert torch.allclose(cams.c2w, method.train_cameras.c2w, atol=1e-5) and torch.allclose(cams.K, method.train_cameras.K)


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


# ---------------------------------------------------------------------------------- analytic field
RADIUS = 0.6


class SphereField(Field):
    """Solid sphere(s): density ``peak`` inside, ramping linearly to 0 over ``width`` around each
    radius (so the level-``s`` surface has radius r + width * (0.5 - s / peak)). rgb = 0.5 + 0.5
    (n_x, n_z, n_y) of the outward normal n; with ``view_dependent`` blue is 0.5 - 0.5 d.n instead
    (1 when seen head-on from outside)."""

    def __init__(self, width: float, peak: float, view_dependent: bool = False,
                 spheres: tuple = ((0.0, 0.0, 0.0, RADIUS),)):
        super().__init__(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        self.width, self.view_dependent = width, view_dependent
        self.peak = nn.Parameter(torch.tensor(float(peak)))
        self.register_buffer("spheres", torch.tensor(spheres))

    def _nearest(self, x):
        rel = x[..., None, :] - self.spheres[:, :3]
        ramp = ((self.spheres[:, 3] - rel.norm(dim=-1)) / self.width + 0.5).clamp(0, 1)
        k = ramp.argmax(-1, keepdim=True)
        return ramp.gather(-1, k), torch.take_along_dim(rel, k[..., None], -2)[..., 0, :]

    def density(self, x, t=None):
        return self.peak * self._nearest(x)[0]

    def forward(self, x, d, t=None):
        ramp, rel = self._nearest(x)
        n = F.normalize(rel, dim=-1)
        blue = 0.5 - 0.5 * (d * n).sum(-1) if self.view_dependent else 0.5 + 0.5 * n[..., 1]
        rgb = torch.stack([0.5 + 0.5 * n[..., 0], 0.5 + 0.5 * n[..., 2], blue], -1)
        return {"density": self.peak * ramp, "rgb": rgb}


def expected_rgb(x: np.ndarray) -> np.ndarray:
    """The view-independent SphereField colour at points ``x`` on the centred sphere."""
    n = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 0.5 + 0.5 * n[:, [0, 2, 1]]


def sphere_method(field: Field, size: int = 32, n_views: int = 6) -> RadianceMethod:
    """A real ray-marched method around the analytic ``field`` (occupancy: cells near the sphere)."""

    class SphereMethod(RadianceMethod):
        name = "sphere-test"

        def make_field(self, aabb):
            return field

    method = SphereMethod(RadianceConfig(grid_resolution=16, steps_per_diagonal=1024), tiny_scene(n_views, size),
                          torch.device("cpu"))
    est = method.estimator
    centres = est.aabbs[0, :3] + (est.grid_coords + 0.5) / est.resolution * (est.aabbs[0, 3:] - est.aabbs[0, :3])
    est.binaries = (centres.norm(dim=-1) < RADIUS + 0.25).reshape(est.binaries.shape)
    return method


@pytest.fixture(scope="module")
def sharp_sphere():
    return sphere_method(SphereField(width=0.01, peak=1e4))


def use_method(monkeypatch, method):
    """Make ``fieldforge export`` see ``method`` as the loaded run."""
    monkeypatch.setattr(export, "load_run", lambda run: (method, None, None))


def ray_sphere(cameras: Cameras, i: int, radius: float):
    """Brute force: distance to the centred sphere along every pixel ray of camera ``i`` (inf = miss)."""
    rays = camera_rays(cameras, i)
    b = (rays.origins * rays.directions).sum(-1)
    disc = b**2 - (rays.origins.norm(dim=-1) ** 2 - radius**2)
    t = -b - disc.clamp_min(0).sqrt()
    return rays, torch.where(disc > 0, t, torch.full_like(t, math.inf))


# ---------------------------------------------------------------------------------- mesh
def test_mesh_of_analytic_sphere_lies_on_the_iso_surface_with_the_fields_colours(monkeypatch, tmp_path, capsys):
    import trimesh

    field = SphereField(width=0.125, peak=200.0, view_dependent=True)  # ramp ~4 voxels wide
    use_method(monkeypatch, sphere_method(field, size=8, n_views=2))
    res = 64
    _, h = grid_shape(field.aabb, res)
    assert h == pytest.approx(2 / 64)
    for level, extra in ((math.log(2) / h, []), (150.0, ["--threshold", "150"])):
        out = tmp_path / f"mesh{level:.0f}.ply"
        assert main(["export", "run", "--format", "mesh", "-o", str(out), "--resolution", str(res), *extra]) == 0
        mesh = trimesh.load(out, process=False)
        r = np.linalg.norm(mesh.vertices, axis=1)
        r_true = RADIUS + 0.125 * (0.5 - level / 200.0)
        assert np.abs(r - r_true).max() < 0.25 * h, level
        assert f"{len(mesh.vertices)} vertices" in capsys.readouterr().out
    n = mesh.vertices / r[:, None]
    assert (np.einsum("ij,ij->i", mesh.vertex_normals, n) > 0.95).all()  # outward normals
    # colour seen along -normal: red/green from the position, blue 1 (head-on); +normal would give 0
    rgb = mesh.visual.vertex_colors[:, :3] / 255.0
    np.testing.assert_allclose(rgb[:, :2], 0.5 + 0.5 * n[:, [0, 2]], atol=0.02)
    assert rgb[:, 2].min() > 0.97
    obj = tmp_path / "mesh.obj"
    assert main(["export", "run", "--format", "mesh", "-o", str(obj), "--resolution", "16"]) == 0
    back = trimesh.load(obj, process=False)
    r_true = RADIUS + 0.125 * (0.5 - math.log(2) / (2 / 16) / 200.0)
    assert len(back.faces) > 100
    assert np.abs(np.linalg.norm(back.vertices, axis=1) - r_true).max() < 2 / 16  # within a voxel
    assert back.visual.vertex_colors[:, 2].min() > 245


def test_mesh_clean_drops_the_small_component(monkeypatch, tmp_path):
    import trimesh

    pytest.importorskip("open3d")
    field = SphereField(width=0.1, peak=100.0, spheres=((0.0, 0.0, 0.0, RADIUS), (0.8, 0.8, 0.8, 0.1)))
    use_method(monkeypatch, sphere_method(field, size=8, n_views=2))
    raw, clean = tmp_path / "raw.ply", tmp_path / "clean.ply"
    assert main(["export", "run", "--format", "mesh", "-o", str(raw), "--resolution", "48"]) == 0
    assert main(["export", "run", "--format", "mesh", "-o", str(clean), "--resolution", "48", "--clean"]) == 0
    before, after = trimesh.load(raw, process=False), trimesh.load(clean, process=False)
    assert len(before.split(only_watertight=False)) == 2 and len(after.split(only_watertight=False)) == 1
    r = np.linalg.norm(after.vertices, axis=1)
    assert np.abs(r - RADIUS).max() < 2 / 48  # the big sphere is what remains
    big = max(len(part.faces) for part in before.split(only_watertight=False))
    assert len(after.faces) == pytest.approx(big, rel=0.01)  # the big sphere is kept whole
    np.testing.assert_allclose(after.visual.vertex_colors[:, :3] / 255.0, expected_rgb(after.vertices), atol=0.03)


def test_mesh_errors_are_one_line_and_write_nothing(monkeypatch, splat_run, tmp_path, capsys):
    out = tmp_path / "m.ply"
    assert main(["export", str(splat_run), "--format", "mesh", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no density field" in err and len(err.strip().splitlines()) == 1
    use_method(monkeypatch, sphere_method(SphereField(width=0.1, peak=100.0), size=8, n_views=2))
    assert main(["export", "run", "--format", "mesh", "-o", str(out), "--resolution", "20000"]) == 2
    err = capsys.readouterr().err
    assert "20001x20001x20001 grid needs about" in err and "GiB" in err and len(err.strip().splitlines()) == 1
    assert main(["export", "run", "--format", "mesh", "-o", str(out), "--resolution", "16", "--threshold", "1e6"]) == 2
    err = capsys.readouterr().err
    assert "no surface at density 1e+06" in err and "[0, 100]" in err
    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d -> ImportError
    assert main(["export", "run", "--format", "mesh", "-o", str(out), "--resolution", "16", "--clean"]) == 2
    err = capsys.readouterr().err
    assert "--clean needs open3d" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["export", "run", "--format", "bogus", "-o", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "invalid choice: 'bogus'" in err and len(err.strip().splitlines()) == 1
    assert main(["export", "run", "--format", "mesh", "-o", str(tmp_path / "m.stl")]) == 2
    assert ".ply or .obj" in capsys.readouterr().err
    use_method(monkeypatch, sphere_method(SphereField(width=0.1, peak=0.0), size=8, n_views=2))  # empty space
    for fmt in ("pointcloud", "splat-ply"):
        assert main(["export", "run", "--format", fmt, "-o", str(out)]) == 2
        assert "no rendered pixel has opacity > 0.5" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left behind


# ---------------------------------------------------------------------------------- point clouds
def test_pointcloud_of_a_field_lies_on_the_ray_sphere_intersections(monkeypatch, sharp_sphere, tmp_path):
    import trimesh

    use_method(monkeypatch, sharp_sphere)
    out = tmp_path / "pc.ply"
    assert main(["export", "run", "--format", "pointcloud", "-o", str(out), "--num-views", "2"]) == 0
    pc = trimesh.load(out)
    cams = sharp_sphere.train_cameras[[0, 5]]
    hits = []
    for i in range(2):
        rays, t = ray_sphere(cams, i, RADIUS + 0.005)  # the density starts at radius + width / 2
        hits.append(rays.origins + rays.directions * t[:, None])
    hits = torch.cat(hits)
    hit = torch.isfinite(hits[:, 0])
    assert abs(len(pc.vertices) - int(hit.sum())) <= 0.05 * int(hit.sum())  # silhouette pixels may differ
    # each point is the brute-force hit of its own pixel's ray (the ray marcher's depth is a ray distance)
    dist = torch.cdist(torch.as_tensor(pc.vertices, dtype=torch.float32), hits[hit]).min(1).values
    assert float(dist.max()) < 0.01
    np.testing.assert_allclose(pc.colors[:, :3] / 255.0, expected_rgb(pc.vertices), atol=0.02)
    few = tmp_path / "few.ply"
    assert main(["export", "run", "--format", "pointcloud", "-o", str(few), "--num-views", "2",
                 "--max-points", "100"]) == 0
    sub = trimesh.load(few).vertices
    assert len(sub) == 100  # a subset of the full cloud:
    assert torch.cdist(torch.as_tensor(sub), torch.as_tensor(pc.vertices)).min(1).values.max() < 1e-6


def test_pointcloud_of_splats_unprojects_z_depth():
    """A plane of flat Gaussians at z = 0 filling two tilted views: the rasterizer's depth is camera z."""
    method = SplatMethod(SplatConfig(init="random", init_num_points=10, sh_degree=0), tiny_scene(2, 8),
                         torch.device("cpu"))
    g = torch.linspace(-2.5, 2.5, 167)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    n = len(xy)
    method.model.set_params({
        "means": torch.cat([xy, torch.zeros(n, 1)], 1),
        "scales": torch.log(torch.tensor([0.02, 0.02, 1e-4])).expand(n, 3),
        "quats": torch.tensor([1.0, 0, 0, 0]).expand(n, 4), "opacities": torch.full((n,), 4.0),
        "sh0": rgb_to_sh0(torch.tensor([0.2, 0.6, 0.9])).expand(n, 1, 3), "shN": torch.zeros(n, 0, 3)})
    size, f = 64, 76.8
    c2w = torch.stack([look_at_c2w(torch.tensor([0.4, -0.3, 2.5])), look_at_c2w(torch.tensor([-0.8, 0.5, 2.2]))])
    cams = Cameras(K=torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]).expand(2, 3, 3),
                   c2w=c2w, width=torch.full((2,), size), height=torch.full((2,), size))
    pts = render_points(method, cams)
    # brute force: every pixel's ray meets the plane inside the square of Gaussians
    rays = [camera_rays(cams, i) for i in range(2)]
    o, d = torch.cat([r.origins for r in rays]), torch.cat([r.directions for r in rays])
    hit = o + d * (-o[:, 2:] / d[:, 2:])
    assert float(hit[:, :2].abs().max()) < 2.3 and len(pts["xyz"]) == len(hit)
    err = (pts["xyz"] - hit).norm(dim=-1)
    # ED blends the depths of the Gaussians covering a pixel, front ones weighted more: a small bias
    # toward the camera (~ the 2D dilation's 0.55 px footprint; measured 0.010 mean, 0.021 max)
    assert float(err.mean()) < 0.02 and float(err.max()) < 0.04
    np.testing.assert_allclose(pts["rgb"].numpy(), np.broadcast_to([0.2, 0.6, 0.9], pts["rgb"].shape), atol=0.02)
    # the same depth read as a ray distance misses the plane ~15x further
    depth = method.render(cams[0], torch.zeros(3))["depth"]
    wrong = (unproject(cams, 0, depth, z_depth=False) - hit[:size * size]).norm(dim=-1)
    assert float(wrong.mean()) > 0.1 and float(wrong.max()) > 0.3  # measured 0.15 mean, 0.44 max


# ---------------------------------------------------------------------------------- field -> splat
def test_field_splat_ply_conversion_renders_like_the_field(monkeypatch, sharp_sphere, tmp_path, capsys):
    use_method(monkeypatch, sharp_sphere)
    out = tmp_path / "conv.ply"
    assert main(["export", "run", "--format", "splat-ply", "-o", str(out)]) == 0
    assert "approximate conversion" in capsys.readouterr().out
    model = splat_ply.read(out)
    assert model.sh_degree == 0 and torch.equal(model.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(len(model), 4))

    def masked_psnr(m, i):
        cams, white = sharp_sphere.train_cameras, torch.ones(3)
        ref = sharp_sphere.render(cams[i], white)
        img, _, _ = render_gaussians(m, torch.linalg.inv(cams.c2w[i:i + 1]), cams.K[i:i + 1], 32, 32, backgrounds=white[None])
        mask = ref["opacity"][..., 0] > 0.5
        return -10 * math.log10(float(((img[0].clamp(0, 1) - ref["rgb"])[mask] ** 2).mean()))

    with torch.no_grad():
        assert min(masked_psnr(model, 0), masked_psnr(model, 3)) > 24  # measured 26.2, 26.3 dB
        shuffled = splat_ply.read(out)
        shuffled.sh0.data = shuffled.sh0.data[torch.randperm(len(shuffled))]  # right geometry, wrong colours
        assert masked_psnr(shuffled, 0) < 16  # measured 9.9 dB
