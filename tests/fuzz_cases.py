"""Families of hostile inputs for the fuzzing suite (``tests/test_fuzz.py``) and the reliability
benchmark (``benchmarks/reliability.py``).

Each family is a hypothesis strategy of mutations of a valid input plus a ``check`` that writes
the input into a fresh folder, hands it to the entry point a user reaches (a dataset loader, the
.ply reader, the camera-path reader, the run-config reader) and returns "accepted" or "refused".
A refusal must be a :class:`~fieldforge.errors.FieldforgeError` whose message is one line naming
the file; anything else (another exception, a traceback, a file written outside the folder,
memory beyond :data:`MEMORY_MB`) fails the check with an AssertionError.
"""

from __future__ import annotations

import copy
import json
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from fieldforge.apps.bench.runs import peak_memory_mb, reset_peak_memory, rss_mb
from fieldforge.apps.training.config import TrainConfig, from_dict, read_config
from fieldforge.errors import FieldforgeError
from fieldforge.fields import splat_ply
from fieldforge.scenes import load
from fieldforge.scenes.paths import load_path

#: most memory a single check may add to the process (MiB)
MEMORY_MB = 512

POSE = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 4.0], [0, 0, 0, 1.0]]

# JSON values a user (or a broken tool) might put anywhere
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.sampled_from([0, -1, 1e308, -0.0, 2**63, "", "nan", "../../etc/passwd"]))
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=12)


def _mutate(doc: dict, edits: list[tuple[list, str, object]]) -> dict:
    """Apply (path of choices, op, value) edits to a JSON document: "set" a value, "del" a key,
    "dup" a list item; a path picks keys / list items by index modulo their count. Works on a copy."""
    doc = copy.deepcopy(doc)
    for path, op, value in edits:
        node, parent, key = doc, None, None
        for choice in path:
            if isinstance(node, dict) and node:
                parent, key = node, sorted(node)[choice % len(node)]
            elif isinstance(node, list) and node:
                parent, key = node, choice % len(node)
            else:
                break
            node = parent[key]
        if parent is None:
            continue
        if op == "set":
            parent[key] = value
        elif op == "del" and isinstance(parent, dict):
            del parent[key]
        elif op == "dup" and isinstance(parent, list):
            parent.extend([parent[key]] * 3)
    return doc


json_edits = st.lists(st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=4),
                                st.sampled_from(["set", "set", "del", "dup"]), json_values), min_size=1, max_size=4)


def _png(path: Path, w: int = 8, h: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (w, h)).save(path)


def _blender(root: Path, edits) -> Path:
    for split in ("train", "test"):
        for k in range(2):
            _png(root / split / f"r_{k}.png")
    meta = {"camera_angle_x": 0.7, "frames": [{"file_path": f"./train/r_{k}", "transform_matrix": POSE} for k in range(2)]}
    (root / "transforms_train.json").write_text(json.dumps(_mutate(meta, edits)))
    test = {"camera_angle_x": 0.7, "frames": [{"file_path": f"./test/r_{k}", "transform_matrix": POSE} for k in range(2)]}
    (root / "transforms_test.json").write_text(json.dumps(test))
    return root


def _nerfstudio(root: Path, edits) -> Path:
    for k in range(3):
        _png(root / "im" / f"{k}.png")
    meta = {"fl_x": 10.0, "w": 8, "h": 6, "camera_model": "OPENCV", "k1": 0.01,
            "frames": [{"file_path": f"im/{k}.png", "transform_matrix": POSE} for k in range(3)]}
    (root / "transforms.json").write_text(json.dumps(_mutate(meta, edits)))
    return root


def _colmap_bytes() -> dict[str, bytes]:
    cams = struct.pack("<Q", 1) + struct.pack("<iiQQ", 1, 1, 8, 6) + struct.pack("<4d", 9.0, 9.0, 4.0, 3.0)
    imgs = struct.pack("<Q", 2)
    for i in range(2):
        imgs += struct.pack("<i4d3di", i + 1, 1.0, 0, 0, 0, 0.1 * i, 0, 4.0, 1) + f"{i}.png".encode() + b"\0"
        imgs += struct.pack("<Q", 1) + struct.pack("<ddq", 1.5, 2.5, -1)
    pts = struct.pack("<Q", 2)
    for i in range(2):
        pts += struct.pack("<Q3d3Bd", i + 1, 0.1 * i, 0.2, 0.3, 10, 20, 30, 0.5) + struct.pack("<Q", 1) + struct.pack("<ii", 1, 0)
    return {"cameras.bin": cams, "images.bin": imgs, "points3D.bin": pts}


byte_edits = st.lists(st.tuples(st.sampled_from(["cameras.bin", "images.bin", "points3D.bin"]),
                                st.sampled_from(["flip", "cut", "pad", "count"]), st.integers(0, 10**6),
                                st.integers(0, 2**64 - 1)), min_size=1, max_size=3)


def _colmap(root: Path, edits) -> Path:
    files = _colmap_bytes()
    for name, op, pos, value in edits:
        b = bytearray(files[name])
        if not b:
            continue
        i = pos % len(b)
        if op == "flip":
            b[i] ^= 1 + value % 255
        elif op == "cut":
            del b[i:]
        elif op == "pad":
            b += bytes(value % 64)
        else:  # the leading record count
            b[:8] = struct.pack("<Q", value)
        files[name] = bytes(b)
    for name, data in files.items():
        (root / "sparse" / "0").mkdir(parents=True, exist_ok=True)
        (root / "sparse" / "0" / name).write_bytes(data)
    for i in range(2):
        _png(root / "images" / f"{i}.png")
    return root


array_edits = st.tuples(st.lists(st.integers(0, 40), min_size=1, max_size=3),
                        st.sampled_from(["float64", "float32", "int64", "uint8", "bool", "U3"]),
                        st.floats(allow_nan=True, allow_infinity=True))


def _llff(root: Path, edit) -> Path:
    """poses_bounds.npy of ``shape`` filled with ``fill`` (shape [0]: a valid one)."""
    shape, dtype, fill = edit
    rows = np.tile(np.array([1, 0, 0, 0, 6, 0, 1, 0, 0, 8, 0, 0, 1, 4, 9.0, 2, 6], dtype=np.float64), (3, 1))
    arr = rows if shape == [0] else np.full(shape, fill).astype(dtype) if dtype != "U3" else np.full(shape, "x")
    np.save(root / "poses_bounds.npy", arr)
    for k in range(3):
        _png(root / "images" / f"{k}.png", 8, 6)
    return root


def _npz(root: Path, edit) -> Path:
    """A valid npz scene with one array replaced by one of ``shape`` filled with ``fill``."""
    shape, dtype, fill = edit
    images = np.zeros((2, 6, 8, 3), np.uint8)
    poses = np.tile(np.array(POSE)[None, :3], (2, 1, 1))
    arrays = {"images": images, "poses": poses, "focal": np.array(9.0)}
    key = ["images", "poses", "focal"][len(shape) % 3]
    if shape != [0]:  # [0]: the valid scene
        arrays[key] = np.full(shape, fill).astype(dtype) if dtype != "U3" else np.full(shape, "x")
    np.savez(root / "scene.npz", **arrays)
    return root


_PLY_PROPS = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *(f"f_rest_{i}" for i in range(9)),
              "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
ply_edits = st.tuples(st.one_of(st.integers(-2, 6), st.integers(-5, 10**12)),
                      st.sets(st.sampled_from(_PLY_PROPS), max_size=4),
                      st.sampled_from(["float", "float", "double", "uchar", "int", "list uchar float"]),
                      st.sampled_from(["exact", "short", "long", "random"]), st.binary(max_size=64),
                      st.sampled_from(["binary_little_endian", "binary_little_endian", "ascii", "binary_big_endian"]),
                      st.floats(allow_nan=True, allow_infinity=True, width=32))


def _ply(root: Path, edit) -> Path:
    """A 3DGS .ply with some properties dropped, of one type, whose body fits the header's count
    ("exact"), falls short of it, runs past it or is random bytes; every value is ``fill``."""
    count, dropped, kind, body_kind, noise, fmt, fill = edit
    props = [p for p in _PLY_PROPS if p not in dropped]
    header = f"ply\nformat {fmt} 1.0\nelement vertex {count}\n" + "".join(f"property {kind} {p}\n" for p in props)
    rows = max(count, 0) if count < 10**4 else 3
    if fmt == "ascii":
        body = ("\n".join(" ".join([repr(fill)] * len(props)) for _ in range(rows)) + "\n").encode()
    else:
        dtype = {"float": "f4", "double": "f8", "uchar": "u1", "int": "i4"}.get(kind, "f4")
        order = "<" if fmt == "binary_little_endian" else ">"
        body = np.full((rows, len(props)), fill).astype(order + dtype).tobytes() if kind != "list uchar float" else noise
    body = {"exact": body, "short": body[: len(body) // 2], "long": body + noise, "random": noise}[body_kind]
    path = root / "scene.ply"
    path.write_bytes(header.encode() + b"end_header\n" + body)
    return path


def _camera_path(root: Path, edits) -> Path:
    doc = {"width": 16, "height": 12, "frames": 3, "convention": "opencv",
           "keyframes": [{"c2w": POSE, "fov": 50.0, "time": 0.0}, {"c2w": POSE, "fx": 9.0, "time": 1.0}]}
    path = root / "path.json"
    path.write_text(json.dumps(_mutate(doc, edits)))
    return path


def _run_config(root: Path, edits) -> Path:
    doc = {"fieldforge": "0.1.0", "train": json.loads(json.dumps(TrainConfig().__dict__)),
           "method": {"seed": 0, "steps": 10}}
    path = root / "config.json"
    path.write_text(json.dumps(_mutate(doc, edits)))
    return path


def _load_scene(root: Path) -> object:
    return load(root)


def _read_config(path: Path) -> object:
    return from_dict(TrainConfig, read_config(path)["train"], path)


#: family -> (strategy, writer(folder, drawn) -> path handed in, reader(path))
FAMILIES: dict[str, tuple[st.SearchStrategy, Callable, Callable]] = {
    "blender transforms.json": (json_edits, _blender, _load_scene),
    "nerfstudio transforms.json": (json_edits, _nerfstudio, _load_scene),
    "COLMAP binary model": (byte_edits, _colmap, _load_scene),
    "LLFF poses_bounds.npy": (array_edits, _llff, _load_scene),
    "npz scene": (array_edits, _npz, _load_scene),
    "3DGS .ply": (ply_edits, _ply, splat_ply.read),
    "camera-path JSON": (json_edits, _camera_path, load_path),
    "run config.json": (json_edits, _run_config, _read_config),
}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders)."""
    return {str(p): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def check(family: str, drawn) -> str:
    """Write one hostile input of ``family`` into a fresh folder and read it back: returns
    "accepted" or "refused"; raises AssertionError when the refusal is not a one-line
    FieldforgeError naming the file, when memory grew by more than :data:`MEMORY_MB` or when a
    file appeared outside the folder."""
    _, write, read = FAMILIES[family]
    with tempfile.TemporaryDirectory() as outer:
        root = Path(outer) / "input"
        root.mkdir()
        target = write(root, drawn)
        before = _snapshot(Path(outer))
        reset_peak_memory("cpu")
        base = rss_mb()
        try:
            read(target)
            outcome = "accepted"
        except FieldforgeError as e:
            msg = str(e)
            assert "\n" not in msg, f"{family}: multi-line error {msg!r}"
            named = {str(target), str(root)} | {str(p) for p in root.rglob("*")}
            assert any(n in msg for n in named) or msg.startswith(("downscale", "unknown format")), \
                f"{family}: error does not name the file: {msg!r}"
            outcome = "refused"
        grown = peak_memory_mb("cpu") - base
        assert grown <= MEMORY_MB, f"{family}: {grown:.0f} MiB for one input"
        assert _snapshot(Path(outer)) == before, f"{family}: files were written or changed"
    return outcome
