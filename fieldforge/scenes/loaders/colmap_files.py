"""Readers for COLMAP sparse models (``cameras``, ``images``, ``points3D`` in .bin or .txt).

Binary files are little-endian as written by COLMAP. Image poses are world-to-camera
(Hamilton quaternion qw, qx, qy, qz and translation t; OpenCV camera axes); IDs are kept as
dictionary keys, never used as indices. COLMAP's pixel convention (top-left corner (0, 0),
pixel centres at +0.5) is the library's, so intrinsics are used unchanged.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldforge.errors import DataError

#: model id -> (name, number of parameters), as in COLMAP's camera_models.h
MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
_NPARAMS = {name: n for name, n in MODELS.values()}


@dataclass
class ColmapCamera:
    model: str
    width: int
    height: int
    params: np.ndarray  # float64, COLMAP parameter order for ``model``


@dataclass
class ColmapImage:
    qvec: np.ndarray  # [4] wxyz, world -> camera
    tvec: np.ndarray  # [3] world -> camera
    camera_id: int
    name: str


def find_file(folder: Path, stem: str) -> Path:
    """``folder/stem.bin`` if present, else ``folder/stem.txt``; DataError if neither exists."""
    for ext in (".bin", ".txt"):
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    raise DataError(folder / f"{stem}.bin", f"not found (nor {stem}.txt)")


class _Reader:
    """Sequential little-endian reads from a byte buffer; running past the end is a DataError."""

    def __init__(self, path: Path):
        self.path, self.buf, self.off = path, path.read_bytes(), 0

    def read(self, fmt: str) -> tuple:
        try:
            out = struct.unpack_from("<" + fmt, self.buf, self.off)
        except struct.error:
            raise DataError(self.path, f"truncated binary COLMAP file (ends at byte {len(self.buf)})") from None
        self.off += struct.calcsize("<" + fmt)
        return out

    def skip(self, n: int) -> None:
        if self.off + n > len(self.buf):
            raise DataError(self.path, f"truncated binary COLMAP file (ends at byte {len(self.buf)})")
        self.off += n

    def cstring(self) -> str:
        end = self.buf.find(b"\0", self.off)
        if end < 0:
            raise DataError(self.path, "truncated binary COLMAP file (unterminated image name)")
        s = self.buf[self.off:end].decode("utf-8", errors="replace")
        self.off = end + 1
        return s

    def done(self) -> None:
        if self.off != len(self.buf):
            raise DataError(self.path, f"malformed binary COLMAP file ({len(self.buf) - self.off} unexpected trailing bytes)")


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None


def _camera(path: Path, cam_id: int, model: str, width: int, height: int, params) -> ColmapCamera:
    if model not in _NPARAMS:
        raise DataError(path, f"camera {cam_id}: unknown camera model {model}")
    params = np.asarray(params, dtype=np.float64)
    if len(params) != _NPARAMS[model] or not np.isfinite(params).all() or width <= 0 or height <= 0:
        raise DataError(path, f"camera {cam_id}: bad size or parameters for {model}")
    n_focal = 1 if model.startswith(("SIMPLE_", "RADIAL")) else 2
    if (params[:n_focal] <= 0).any():
        raise DataError(path, f"camera {cam_id}: focal length must be positive, got {params[:n_focal].tolist()}")
    return ColmapCamera(model, int(width), int(height), params)


def read_cameras(path: Path) -> dict[int, ColmapCamera]:
    """camera_id -> camera from cameras.bin or cameras.txt."""
    cams = {}
    if path.suffix == ".bin":
        r = _Reader(path)
        for _ in range(r.read("Q")[0]):
            cam_id, model_id, w, h = r.read("iiQQ")
            if model_id not in MODELS:
                raise DataError(path, f"camera {cam_id}: unknown camera model id {model_id}")
            name, n = MODELS[model_id]
            cams[cam_id] = _camera(path, cam_id, name, w, h, r.read(f"{n}d"))
        r.done()
        return cams
    for line in _text_lines(path):
        e = line.split()
        if not e or e[0].startswith("#"):
            continue
        try:
            cams[int(e[0])] = _camera(path, int(e[0]), e[1], int(e[2]), int(e[3]), [float(x) for x in e[4:]])
        except (ValueError, IndexError):
            raise DataError(path, f"malformed camera line: {line.strip()!r}") from None
    return cams


def read_images(path: Path) -> dict[int, ColmapImage]:
    """image_id -> pose, camera id and name from images.bin or images.txt (2D points skipped)."""
    imgs = {}
    if path.suffix == ".bin":
        r = _Reader(path)
        for _ in range(r.read("Q")[0]):
            v = r.read("i7di")
            name = r.cstring()
            r.skip(24 * r.read("Q")[0])
            imgs[v[0]] = ColmapImage(np.array(v[1:5]), np.array(v[5:8]), v[8], name)
        r.done()
    else:
        lines = _text_lines(path)
        i = 0
        while i < len(lines):
            e = lines[i].split()
            i += 1
            if not e or e[0].startswith("#"):
                continue
            try:
                v = [float(x) for x in e[1:8]]
                imgs[int(e[0])] = ColmapImage(np.array(v[:4]), np.array(v[4:]), int(e[8]), " ".join(e[9:]))
            except (ValueError, IndexError):
                raise DataError(path, f"malformed image line: {lines[i - 1].strip()!r}") from None
            i += 1  # the POINTS2D line that follows every image line (possibly empty)
    for k, im in imgs.items():
        if not (np.isfinite(im.qvec).all() and np.isfinite(im.tvec).all()) or np.linalg.norm(im.qvec) == 0:
            raise DataError(path, f"image {k} ({im.name}): non-finite or zero pose")
        if not im.name:
            raise DataError(path, f"image {k}: empty name")
    return imgs


def read_points(path: Path) -> tuple[Tensor, Tensor]:
    """Points [P, 3] float32 (world) and colours [P, 3] uint8 from points3D.bin or .txt."""
    if path.suffix == ".bin":
        r = _Reader(path)
        n = r.read("Q")[0]
        buf = r.buf
        if n > (len(buf) - 8) // 51:  # every record holds at least 51 bytes
            raise DataError(path, f"claims {n} points but its {len(buf)} bytes hold at most {(len(buf) - 8) // 51}")
        starts = np.empty(n, dtype=np.int64)
        off = 8
        for i in range(n):  # records have variable track lengths: only the offsets are sequential
            if off + 51 > len(buf):
                raise DataError(path, f"truncated binary COLMAP file (ends at byte {len(buf)})")
            starts[i] = off
            off += 51 + 8 * int.from_bytes(buf[off + 43:off + 51], "little")
        r.off = off
        r.done()
        raw = np.frombuffer(buf, dtype=np.uint8)
        xyz = raw[starts[:, None] + np.arange(8, 32)].copy().view("<f8").reshape(n, 3)
        rgb = raw[starts[:, None] + np.arange(32, 35)]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # empty file warning
            try:
                a = np.loadtxt(path, comments="#", usecols=range(7), ndmin=2, dtype=np.float64)
            except ValueError as e:
                raise DataError(path, f"malformed points3D text file ({e})") from None
        xyz, rgb = a[:, 1:4], a[:, 4:7]
        if ((rgb < 0) | (rgb > 255)).any():
            raise DataError(path, "point colours outside 0..255")
    if not np.isfinite(xyz).all():
        raise DataError(path, "non-finite point coordinates")
    return torch.from_numpy(np.ascontiguousarray(xyz)).float(), torch.from_numpy(np.ascontiguousarray(rgb)).to(torch.uint8)


def qvec_to_rotmat(q: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] from (unnormalised) Hamilton quaternions [N, 4] wxyz."""
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)


def camera_to_world(images: list[ColmapImage]) -> Tensor:
    """Camera-to-world [N, 4, 4] float64 (OpenCV axes) from COLMAP world-to-camera poses."""
    q = torch.tensor(np.stack([im.qvec for im in images]), dtype=torch.float64)
    t = torch.tensor(np.stack([im.tvec for im in images]), dtype=torch.float64)
    R = qvec_to_rotmat(q)
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(images), 1, 1)
    c2w[:, :3, :3] = R.transpose(1, 2)
    c2w[:, :3, 3] = -(R.transpose(1, 2) @ t[:, :, None])[..., 0]
    return c2w


def intrinsics(path: Path, cam_id: int, cam: ColmapCamera) -> tuple[list[float], list[float], str]:
    """(fx, fy, cx, cy), distortion (k1, k2, k3, k4, p1, p2) and Cameras.model for one camera;
    models with terms the library cannot represent raise DataError."""
    p = cam.params.tolist()
    m = cam.model
    zero = [0.0] * 6
    if m == "SIMPLE_PINHOLE":
        return [p[0], p[0], p[1], p[2]], zero, "pinhole"
    if m == "PINHOLE":
        return p[:4], zero, "pinhole"
    if m == "SIMPLE_RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3], 0, 0, 0, 0, 0], "opencv"
    if m == "RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3], p[4], 0, 0, 0, 0], "opencv"
    if m == "OPENCV":
        return p[:4], [p[4], p[5], 0, 0, p[6], p[7]], "opencv"
    if m == "OPENCV_FISHEYE":
        return p[:4], [p[4], p[5], p[6], p[7], 0, 0], "opencv_fisheye"
    if m == "FULL_OPENCV" and p[9] == p[10] == p[11] == 0:  # no rational denominator
        return p[:4], [p[4], p[5], p[8], 0, p[6], p[7]], "opencv"
    if m == "FOV" and p[4] == 0:
        return p[:4], zero, "pinhole"
    if m == "SIMPLE_RADIAL_FISHEYE":
        return [p[0], p[0], p[1], p[2]], [p[3], 0, 0, 0, 0, 0], "opencv_fisheye"
    if m == "RADIAL_FISHEYE":
        return [p[0], p[0], p[1], p[2]], [p[3], p[4], 0, 0, 0, 0], "opencv_fisheye"
    if m == "THIN_PRISM_FISHEYE" and p[6] == p[7] == p[10] == p[11] == 0:  # no tangential/prism terms
        return p[:4], [p[4], p[5], p[8], p[9], 0, 0], "opencv_fisheye"
    raise DataError(path, f"camera {cam_id}: model {m} with parameters {p} cannot be represented "
                          "(supported: pinhole, OpenCV radial-tangential up to k3, OpenCV fisheye)")
