"""Standard 3DGS .ply interchange (Inria layout, read by the common splat viewers).

One ``vertex`` element, binary little-endian float32 properties in this order: x y z, nx ny nz
(zeros), f_dc_0..2, f_rest_0..3(K-1)-1, opacity (logit), scale_0..2 (log), rot_0..3 (wxyz,
unnormalised). ``f_rest`` is channel-major: all R coefficients of bases 1..K-1, then G, then
B. Values are pre-activation, exactly the :class:`GaussianModel` parameters.

``write(path, model)`` drops rows with non-finite values (as gsplat's exporter) and returns the
number written; ``read(path)`` looks properties up by name (normals optional, f_rest sorted
numerically) and raises :class:`DataError` naming the file for malformed, truncated or
non-finite input.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from fieldforge.errors import DataError
from fieldforge.fields.gaussians import GaussianModel

BASE = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
        "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def write(path: str | Path, model: GaussianModel) -> int:
    """Write ``model`` as a binary 3DGS .ply; returns the number of Gaussians written."""
    from plyfile import PlyData, PlyElement

    with torch.no_grad():
        n, k1 = len(model), model.shN.shape[1]
        rest = model.shN.detach().transpose(1, 2).reshape(n, 3 * k1)  # channel-major
        cols = [model.means, torch.zeros(n, 3), model.sh0.reshape(n, 3), rest, model.opacities[:, None],
                model.scales, model.quats]
        data = torch.cat([c.detach().float().cpu() for c in cols], 1).numpy()
    data = data[np.isfinite(data).all(1)]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k1)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rows = np.empty(len(data), dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        rows[name] = data[:, i]
    PlyData([PlyElement.describe(rows, "vertex")], byte_order="<").write(str(path))
    return len(data)


def read(path: str | Path) -> GaussianModel:
    """Read a 3DGS .ply (Inria or gsplat writer) into a :class:`GaussianModel`."""
    from plyfile import PlyData, PlyParseError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
        names = [p.name for p in vertex.properties]
        table = vertex.data
    except KeyError:
        raise DataError(path, "no 'vertex' element; not a Gaussian splat .ply") from None
    except (PlyParseError, ValueError, EOFError, IndexError, UnicodeDecodeError) as e:
        raise DataError(path, f"malformed or truncated .ply ({str(e).strip() or type(e).__name__})") from None
    missing = [name for name in BASE if name not in names]
    if missing:
        raise DataError(path, f"missing properties {', '.join(missing)}; not a 3DGS .ply")
    rest = sorted((name for name in names if name.startswith("f_rest_")), key=lambda s: int(s[7:]))
    if any(not re.fullmatch(r"f_rest_\d+", s) for s in rest) or [int(s[7:]) for s in rest] != list(range(len(rest))):
        raise DataError(path, f"f_rest_* properties are not numbered 0..{len(rest) - 1}")
    k = len(rest) // 3 + 1
    degree = round(math.sqrt(k)) - 1
    if len(rest) % 3 or (degree + 1) ** 2 != k or degree > 3:
        raise DataError(path, f"{len(rest)} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0-3)")
    n = len(table)

    def cols(keys):
        if not keys:
            return torch.zeros(n, 0)
        arr = np.stack([np.asarray(table[key], dtype=np.float32) for key in keys], 1)
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr).all(1)).sum())
            raise DataError(path, f"{bad} Gaussian(s) with non-finite values in {keys[0]}..{keys[-1]}")
        return torch.from_numpy(arr)

    model = GaussianModel(n, degree)
    model.set_params({
        "means": cols(["x", "y", "z"]),
        "sh0": cols(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(n, 1, 3),
        "shN": cols(rest).reshape(n, 3, k - 1).transpose(1, 2).contiguous(),
        "opacities": cols(["opacity"]).reshape(n),
        "scales": cols(["scale_0", "scale_1", "scale_2"]),
        "quats": cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
    })
    return model
