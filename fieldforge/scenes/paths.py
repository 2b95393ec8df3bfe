"""Camera paths for videos: orbits, LLFF-style spirals and keyframed JSON paths.

Every function returns :class:`fieldforge.scenes.Cameras` with camera-to-world matrices in
OpenCV axes (x right, y down, z forward), float32, one camera per output frame.

Camera-path JSON (``load_path`` / ``save_path``)::

    {
      "convention": "opencv",      # axes of every "c2w": "opencv" (x right, y down,
                                   # z forward; default) or "opengl" (x right, y up, z back)
      "width": 400,                # output image size in pixels (required)
      "height": 300,
      "frames": 120,               # optional: default number of output frames
      "keyframes": [               # at least one; keyframes are evenly spaced in the output
        {
          "c2w": [[r00, r01, r02, tx], [r10, r11, r12, ty], [r20, r21, r22, tz], [0, 0, 0, 1]],
                                   # camera-to-world 4x4, row-major, world units
          "fov": 50.0,             # vertical field of view in degrees, square pixels ...
          "fx": 320.0, "fy": 320.0,# ... or focal lengths in pixels (fy defaults to fx)
          "cx": 200.0, "cy": 150.0,# optional principal point in pixels (default: centre)
          "time": 0.0              # optional time in [0, 1]: on every keyframe or none
        }
      ]
    }

Interpolation between keyframes (piecewise over consecutive pairs): rotations are slerped,
positions, fields of view (as angles), principal points and times are linearly interpolated.
Output frame f of N sits at keyframe parameter f (K - 1) / (N - 1), so N = K reproduces the
keyframes exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldforge.errors import DataError
from fieldforge.limits import MAX_FRAMES, check_image_size
from fieldforge.scenes.cameras import Cameras, opengl_to_opencv
from fieldforge.scenes.scene import Scene

CONVENTIONS = ("opencv", "opengl")


def look_at(eyes: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """Camera-to-world [N, 4, 4] (OpenCV axes) for cameras at ``eyes`` [N, 3] looking at
    ``target`` [3] or [N, 3] with world ``up`` [3] appearing upwards in the image."""
    eyes = torch.as_tensor(eyes)
    target = torch.as_tensor(target, dtype=eyes.dtype).expand_as(eyes)
    up = torch.as_tensor(up, dtype=eyes.dtype).expand_as(eyes)
    z = target - eyes
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up)
    norm = x.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-8).any()):
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x = x / norm
    y = torch.linalg.cross(z, x)
    c2w = torch.zeros(eyes.shape[0], 4, 4, dtype=eyes.dtype)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, z, eyes
    c2w[:, 3, 3] = 1.0
    return c2w


def focus_point(cameras: Cameras) -> Tensor:
    """The point [3] nearest (least squares) to all optical axes of ``cameras``."""
    c2w = cameras.c2w.double()
    d, o = c2w[:, :3, 2], c2w[:, :3, 3]
    proj = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]
    A, b = proj.sum(0), torch.einsum("nij,nj->i", proj, o)
    return torch.linalg.lstsq(A, b[:, None]).solution[:, 0]


def estimate_up(cameras: Cameras) -> Tensor:
    """World up [3] seen by ``cameras``: their mean image-up direction (minus OpenCV y),
    projected onto the directions that are (nearly) orthogonal to every camera's x axis.

    For roll-free cameras spread around an object the x axes span the horizontal plane, so the
    result is the exact vertical even when the mean image-up is tilted by uneven azimuths; for
    forward-facing captures (x axes all alike) it is the mean image-up without its x part.
    """
    c2w = cameras.c2w.double()
    up = -c2w[:, :3, 1].mean(0)
    x = c2w[:, :3, 0]
    evals, evecs = torch.linalg.eigh(x.T @ x / x.shape[0])
    basis = evecs[:, evals < 0.1 * evals[-1]]
    up = basis @ (basis.T @ up)
    return up / up.norm()


def with_resolution(cameras: Cameras, width: int, height: int) -> Cameras:
    """``cameras`` rendered at ``width`` x ``height``: the vertical field of view and square
    pixels are kept, the principal point keeps its relative position (so a new aspect ratio
    widens or narrows the horizontal view)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"resolution must be positive, got {width}x{height}")
    sy = height / cameras.height.double()
    sx = width / cameras.width.double()
    K = cameras.K.clone()
    K[:, 0, 0] *= sy.to(K)
    K[:, 1, 1] *= sy.to(K)
    K[:, 0, 2] *= sx.to(K)
    K[:, 1, 2] *= sy.to(K)
    n = len(cameras)
    return Cameras(K=K, c2w=cameras.c2w, width=torch.full((n,), width), height=torch.full((n,), height),
                   model=cameras.model, distortion=cameras.distortion, times=cameras.times)


def _source_cameras(source: Scene | Cameras) -> Cameras:
    if isinstance(source, Scene):
        return source.cameras[source.splits["train"]] if "train" in source.splits else source.cameras
    return source


def _path_cameras(c2w: Tensor, template: Cameras, times: Tensor | None) -> Cameras:
    n = c2w.shape[0]
    return Cameras(K=template.K[:1].expand(n, 3, 3).clone(), c2w=c2w.float(),
                   width=template.width[:1].expand(n).clone(), height=template.height[:1].expand(n).clone(),
                   times=times)


def _default_times(cams: Cameras, n_frames: int, times: Tensor | float | None) -> Tensor | None:
    if times is not None:
        return torch.as_tensor(times, dtype=torch.float32).expand(n_frames).clone()
    return torch.linspace(0, 1, n_frames) if cams.times is not None else None


def orbit(source: Scene | Cameras, n_frames: int, *, center: Tensor | None = None,
          radius: float | None = None, height: float | None = None, up: Tensor | None = None,
          times: Tensor | float | None = None) -> Cameras:
    """A full circle of ``n_frames`` cameras around ``up`` through ``center``, looking at it.

    Defaults come from the training cameras of ``source``: ``center`` = the point nearest all
    optical axes, ``up`` = :func:`estimate_up`, ``radius`` / ``height`` = mean horizontal
    distance / height of the camera centres relative to ``center``. Starts at the first training
    camera's azimuth (the farthest camera's if the first is on the axis) and turns
    counter-clockwise about ``up``. Intrinsics and size are those of the first training camera.
    ``times``: a fixed time or [n_frames]; default sweeps 0 -> 1 for dynamic scenes, None for
    static ones.
    """
    if n_frames < 1:
        raise ValueError(f"orbit: n_frames must be >= 1, got {n_frames}")
    cams = _source_cameras(source)
    up = estimate_up(cams) if up is None else torch.as_tensor(up, dtype=torch.float64)
    up = up / up.norm()
    center = focus_point(cams) if center is None else torch.as_tensor(center, dtype=torch.float64)
    rel = cams.centers.double() - center
    along = rel @ up
    horiz = rel - along[:, None] * up
    radius = float(horiz.norm(dim=-1).mean()) if radius is None else float(radius)
    height = float(along.mean()) if height is None else float(height)
    lengths = horiz.norm(dim=-1)
    if float(lengths.max()) < 1e-9:
        raise ValueError("orbit: every training camera lies on the up axis; pass center/up")
    start = 0 if float(lengths[0]) > 1e-6 * float(lengths.max()) else int(lengths.argmax())
    a = horiz[start] / lengths[start]
    b = torch.linalg.cross(up, a)
    theta = torch.arange(n_frames, dtype=torch.float64) * (2 * math.pi / n_frames)
    eyes = center + height * up + radius * (torch.cos(theta)[:, None] * a + torch.sin(theta)[:, None] * b)
    return _path_cameras(look_at(eyes, center, up), cams, _default_times(cams, n_frames, times))


def spiral(source: Scene | Cameras, n_frames: int, *, n_rotations: float = 2.0, zrate: float = 0.5,
           radii: Tensor | None = None, focus: float | None = None,
           times: Tensor | float | None = None) -> Cameras:
    """LLFF-style spiral for forward-facing captures, around the mean training pose.

    Centre c(theta) = mean centre + R_mean @ (rx cos theta, ry sin theta, rz sin(zrate theta))
    (R_mean in OpenCV axes), looking at the point ``focus`` units ahead of the mean centre.
    ``radii`` default to the 90th percentile of |camera offsets| in the mean frame (as LLFF).
    ``focus`` defaults to LLFF's 1 / (0.25 / (0.9 near) + 0.75 / (5 far)) when ``source`` is a
    Scene with finite near/far, else to the depth of :func:`focus_point` along the mean axis.
    """
    if n_frames < 1:
        raise ValueError(f"spiral: n_frames must be >= 1, got {n_frames}")
    cams = _source_cameras(source)
    c2w = cams.c2w.double()
    mean_c = c2w[:, :3, 3].mean(0)
    fwd = c2w[:, :3, 2].mean(0)
    fwd = fwd / fwd.norm()
    up = estimate_up(cams)
    R = look_at(mean_c[None], mean_c + fwd, up)[0, :3, :3]
    if radii is None:
        offsets = (c2w[:, :3, 3] - mean_c) @ R
        radii = torch.quantile(offsets.abs(), 0.9, dim=0)
    radii = torch.as_tensor(radii, dtype=torch.float64)
    if focus is None:
        if isinstance(source, Scene) and 0 < source.near < source.far < 1e9:
            focus = 1.0 / (0.25 / (0.9 * source.near) + 0.75 / (5.0 * source.far))
        else:
            focus = float((focus_point(cams) - mean_c) @ fwd)
            if not focus > 0:
                raise ValueError("spiral: the cameras do not converge in front; pass focus=")
    theta = torch.linspace(0, 2 * math.pi * n_rotations, n_frames + 1, dtype=torch.float64)[:-1]
    local = torch.stack([torch.cos(theta), torch.sin(theta), torch.sin(theta * zrate)], -1) * radii
    eyes = mean_c + local @ R.T
    return _path_cameras(look_at(eyes, mean_c + focus * fwd, up), cams,
                         _default_times(cams, n_frames, times))


def _keyframe_intrinsics(path: Path, i: int, kf: dict, width: int, height: int) -> list[float]:
    """(fov_x, fov_y, cx, cy) of keyframe ``i``; angles in radians."""
    if "fov" in kf:
        fov = _number(path, f"keyframes[{i}].fov", kf["fov"])
        if not 0 < fov < 180:
            raise DataError(path, f"keyframes[{i}].fov must be in (0, 180) degrees, got {fov}")
        fy = 0.5 * height / math.tan(math.radians(fov) / 2)
        fx = fy
    elif "fx" in kf:
        fx = _number(path, f"keyframes[{i}].fx", kf["fx"])
        fy = _number(path, f"keyframes[{i}].fy", kf.get("fy", fx))
        if fx <= 0 or fy <= 0:
            raise DataError(path, f"keyframes[{i}]: focal lengths must be positive")
    else:
        raise DataError(path, f"keyframes[{i}] needs 'fov' (degrees) or 'fx'/'fy' (pixels)")
    cx = _number(path, f"keyframes[{i}].cx", kf.get("cx", width / 2))
    cy = _number(path, f"keyframes[{i}].cy", kf.get("cy", height / 2))
    return [2 * math.atan(0.5 * width / fx), 2 * math.atan(0.5 * height / fy), cx, cy]


def _number(path: Path, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, f"{name} must be a finite number, got {value!r}")
    return float(value)


def _keyframe_pose(path: Path, i: int, kf: dict) -> np.ndarray:
    try:
        m = np.asarray(kf["c2w"], dtype=np.float64)
    except KeyError:
        raise DataError(path, f"keyframes[{i}] has no 'c2w'") from None
    except (TypeError, ValueError):
        raise DataError(path, f"keyframes[{i}].c2w is not a 4x4 list of numbers") from None
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise DataError(path, f"keyframes[{i}].c2w must be a finite 4x4 matrix, got shape {m.shape}")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise DataError(path, f"keyframes[{i}].c2w: last row must be [0, 0, 0, 1]")
    R = m[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise DataError(path, f"keyframes[{i}].c2w: rotation part is not a proper rotation")
    return m


def load_path(json_file: str | Path, n_frames: int | None = None) -> Cameras:
    """Read a camera-path JSON (module docstring) and interpolate it to ``n_frames`` cameras
    (default: the file's "frames", else one per keyframe). Bad files raise ``DataError``."""
    path = Path(json_file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "camera path file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read camera path: {e}") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise DataError(path, "camera path must be a JSON object with 'keyframes'")
    convention = data.get("convention", "opencv")
    if convention not in CONVENTIONS:
        raise DataError(path, f"convention must be one of {CONVENTIONS}, got {convention!r}")
    size = []
    for key in ("width", "height"):
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise DataError(path, f"'{key}' must be a positive integer, got {v!r}")
        size.append(v)
    width, height = size
    check_image_size(width, height, "a frame", path)
    kfs = data.get("keyframes")
    if not isinstance(kfs, list) or not kfs or not all(isinstance(k, dict) for k in kfs):
        raise DataError(path, "'keyframes' must be a non-empty list of objects")
    if n_frames is None:
        n_frames = data.get("frames", len(kfs))
        if isinstance(n_frames, bool) or not isinstance(n_frames, int) or not 1 <= n_frames <= MAX_FRAMES:
            raise DataError(path, f"'frames' must be an integer in [1, {MAX_FRAMES}], got {n_frames!r}")
    elif not 1 <= n_frames <= MAX_FRAMES:
        raise ValueError(f"load_path: n_frames must be in [1, {MAX_FRAMES}], got {n_frames}")

    poses = np.stack([_keyframe_pose(path, i, k) for i, k in enumerate(kfs)])
    intr = np.array([_keyframe_intrinsics(path, i, k, width, height) for i, k in enumerate(kfs)])
    has_time = ["time" in k for k in kfs]
    if any(has_time) and not all(has_time):
        raise DataError(path, "'time' must be given on every keyframe or on none")
    times = None
    if all(has_time):
        times = np.array([_number(path, f"keyframes[{i}].time", k["time"]) for i, k in enumerate(kfs)])
        if ((times < 0) | (times > 1)).any():
            raise DataError(path, "keyframe times must lie in [0, 1]")

    n_key = len(kfs)
    u = np.linspace(0.0, n_key - 1, n_frames) if n_frames > 1 else np.zeros(1)
    seg = np.clip(np.floor(u).astype(int), 0, max(n_key - 2, 0))
    w = (u - seg)[:, None] if n_key > 1 else np.zeros((n_frames, 1))
    nxt = np.minimum(seg + 1, n_key - 1)

    def lerp(v: np.ndarray) -> np.ndarray:
        return v[seg] * (1 - w) + v[nxt] * w

    from scipy.spatial.transform import Rotation, Slerp  # 0.25 s to import: only when a path is read

    if n_key > 1:
        rots = Slerp(np.arange(n_key), Rotation.from_matrix(poses[:, :3, :3]))(u).as_matrix()
    else:
        rots = np.repeat(Rotation.from_matrix(poses[:, :3, :3]).as_matrix(), n_frames, 0)
    c2w = np.zeros((n_frames, 4, 4))
    c2w[:, :3, :3], c2w[:, :3, 3], c2w[:, 3, 3] = rots, lerp(poses[:, :3, 3]), 1.0
    fov_x, fov_y, cx, cy = lerp(intr).T
    K = np.zeros((n_frames, 3, 3))
    K[:, 0, 0] = 0.5 * width / np.tan(fov_x / 2)
    K[:, 1, 1] = 0.5 * height / np.tan(fov_y / 2)
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1.0
    c2w_t = torch.from_numpy(c2w).float()
    if convention == "opengl":
        c2w_t = opengl_to_opencv(c2w_t)
    return Cameras(K=torch.from_numpy(K).float(), c2w=c2w_t, width=torch.full((n_frames,), width),
                   height=torch.full((n_frames,), height),
                   times=None if times is None else torch.from_numpy(lerp(times[:, None])[:, 0]).float())


def save_path(json_file: str | Path, cameras: Cameras, convention: str = "opencv",
              n_frames: int | None = None) -> Path:
    """Write ``cameras`` as keyframes (fx, fy, cx, cy and time when present) to a camera-path
    JSON that :func:`load_path` reads back; all cameras must share one image size."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if len(cameras) == 0 or bool((cameras.width != cameras.width[0]).any()
                                 or (cameras.height != cameras.height[0]).any()):
        raise ValueError("save_path: needs at least one camera and one image size for all cameras")
    c2w = cameras.c2w.double()
    if convention == "opengl":
        c2w = opengl_to_opencv(c2w)  # the flip is its own inverse
    keyframes = []
    for i in range(len(cameras)):
        K = cameras.K[i].double()
        kf = {"c2w": c2w[i].tolist(), "fx": float(K[0, 0]), "fy": float(K[1, 1]),
              "cx": float(K[0, 2]), "cy": float(K[1, 2])}
        if cameras.times is not None:
            kf["time"] = float(cameras.times[i])
        keyframes.append(kf)
    data = {"convention": convention, "width": int(cameras.width[0]), "height": int(cameras.height[0]),
            "keyframes": keyframes}
    if n_frames is not None:
        data["frames"] = int(n_frames)
    out = Path(json_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    return out
