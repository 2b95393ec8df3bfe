"""3DGS .ply interchange and the splat losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from fieldforge.apps.training.losses import ssim
from fieldforge.errors import DataError
from fieldforge.fields import splat_ply
from tests.test_splat_scenes import random_gaussians


def test_ply_round_trip_and_inria_layout(tmp_path):
    model = random_gaussians(30, sh_degree=3)
    assert splat_ply.write(tmp_path / "a.ply", model) == 30
    ply = PlyData.read(str(tmp_path / "a.ply"))
    names = [p.name for p in ply["vertex"].properties]
    assert len(names) == 62 and names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    # channel-major f_rest: f_rest_0..14 are the red coefficients of bases 1..15
    rest_r = np.stack([ply["vertex"][f"f_rest_{i}"] for i in range(15)], 1)
    np.testing.assert_array_equal(rest_r, model.shN[:, :, 0].detach().numpy())
    back = splat_ply.read(tmp_path / "a.ply")
    assert back.sh_degree == 3
    for name, p in model.params().items():
        assert torch.equal(back.params()[name], p.detach()), name


def test_ply_drops_non_finite_rows_on_write(tmp_path):
    model = random_gaussians(5, sh_degree=0)
    with torch.no_grad():
        model.scales[2, 1] = float("nan")
    assert splat_ply.write(tmp_path / "a.ply", model) == 4
    assert len(splat_ply.read(tmp_path / "a.ply")) == 4


def _write_table(path, names, rows):
    arr = np.empty(len(rows), dtype=[(n, "<f4") for n in names])
    for i, n in enumerate(names):
        arr[n] = rows[:, i]
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))


def test_ply_reads_by_name_without_normals_in_any_order(tmp_path):
    # gsplat's writer omits normals; put properties in a scrambled order with f_rest 10 < 9 lexically
    names = ["rot_0", "rot_1", "rot_2", "rot_3", "opacity", "scale_0", "scale_1", "scale_2", "x", "y", "z",
             "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in reversed(range(24))]
    rows = np.random.default_rng(0).normal(size=(7, len(names))).astype(np.float32)
    _write_table(tmp_path / "g.ply", names, rows)
    model = splat_ply.read(tmp_path / "g.ply")
    col = {n: torch.from_numpy(rows[:, i]) for i, n in enumerate(names)}
    assert model.sh_degree == 2
    assert torch.equal(model.means[:, 2], col["z"]) and torch.equal(model.quats[:, 3], col["rot_3"])
    assert torch.equal(model.shN[:, 0, 1], col["f_rest_8"])  # green of basis 1 = f_rest_{K-1}
    assert torch.equal(model.shN[:, 7, 2], col["f_rest_23"])


def test_ply_errors_name_the_file(tmp_path):
    model = random_gaussians(6, sh_degree=1)
    good = tmp_path / "good.ply"
    splat_ply.write(good, model)
    data = good.read_bytes()
    cases = {}
    (tmp_path / "trunc.ply").write_bytes(data[:-30])
    cases["trunc.ply"] = "truncated"
    (tmp_path / "junk.ply").write_bytes(b"not a ply\n" + data[:50])
    cases["junk.ply"] = "malformed"
    _write_table(tmp_path / "count.ply", ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0",
                                          "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
                                          "f_rest_0", "f_rest_1"], np.zeros((3, 16), np.float32))
    cases["count.ply"] = "f_rest"
    _write_table(tmp_path / "missing.ply", ["x", "y", "z"], np.zeros((3, 3), np.float32))
    cases["missing.ply"] = "missing properties"
    rows = np.zeros((3, 14), np.float32)
    rows[1, 6] = np.inf
    _write_table(tmp_path / "inf.ply", ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0",
                                        "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"], rows)
    cases["inf.ply"] = "non-finite"
    cases["absent.ply"] = "no such file"
    for name, problem in cases.items():
        with pytest.raises(DataError, match=problem) as err:
            splat_ply.read(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(40, 50, 3, generator=g)
    b = (a + 0.2 * torch.randn(40, 50, 3, generator=g)).clamp(0, 1)
    ref = structural_similarity(a.double().numpy(), b.double().numpy(), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0, channel_axis=2)
    assert abs(float(ssim(a.double(), b.double(), padding="valid")) - ref) < 1e-6
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
