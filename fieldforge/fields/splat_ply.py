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


_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
          "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def _check_counts(path: Path) -> None:
    """Refuse a header whose element counts need more bytes than the file has (before any
    array of that size is allocated): binary rows take their fixed size (a list at least its
    count), ASCII rows at least two bytes per property."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return  # the parser names what is wrong
    body = path.stat().st_size - (end + len(b"end_header\n"))
    lines = head[:end].decode("ascii", "replace").splitlines()
    ascii_format = any(line.split()[:2] == ["format", "ascii"] for line in lines)
    elements: list[list] = []  # [name, count, bytes per row]
    for words in (line.split() for line in lines):
        if words[:1] == ["element"] and len(words) == 3:
            if not words[2].isdigit():
                raise DataError(path, f"element {words[1]!r}: count must be a non-negative integer, got {words[2]!r}")
            elements.append([words[1], int(words[2]), 0])
        elif words[:1] == ["property"] and len(words) >= 3 and elements:
            elements[-1][2] += 2 if ascii_format else _SIZES.get(words[2] if words[1] == "list" else words[1], 1)
    for name, count, row in elements:
        if count and not row:  # rows of zero bytes: numpy would divide by zero reading them
            raise DataError(path, f"element {name!r} has {count} rows but no properties")
    need = sum(count * row for _, count, row in elements)
    if need > body:
        raise DataError(path, f"truncated .ply: its header needs {need:,} bytes of data or more, the file has {body:,}")


def read(path: str | Path) -> GaussianModel:
    """Read a 3DGS .ply (Inria or gsplat writer) into a :class:`GaussianModel`."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    _check_counts(path)
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
        names = [p.name for p in vertex.properties]
        table = vertex.data
    except KeyError:
        raise DataError(path, "no 'vertex' element; not a Gaussian splat .ply") from None
    except Exception as e:  # plyfile raises many types (parse errors, mmap and numpy errors) on bad files
        raise DataError(path, f"malformed or truncated .ply ({type(e).__name__}: {str(e).strip()[:200]})") from None
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
