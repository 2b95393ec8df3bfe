"""Viewer sessions: a browser viewer (viser) of a trained run or a .ply, and the live viewer of
``fieldforge train --view``.

Open http://HOST:PORT in a browser. The server renders each browser's view with
``method.render`` (:mod:`fieldforge.apps.viewer.render` converts viser cameras) at
``moving_size`` pixels on the long side while the camera moves and at ``max_size`` once it has
rested for 0.3 s. The GUI picks the output (rgb, depth, opacity and any extra image a
method returns), the time of dynamic scenes, the background colour, and edits a camera path
(keyframes at the current view and time) saved as the JSON ``fieldforge render --path`` reads.
Clicking a training-camera frustum moves the view to it.

Live (``train --view``): the viewer runs in the training process; :meth:`Viewer.on_step` is the
trainer's hook. It renders in the training thread between steps (never concurrently with a
step), refreshes the views every ``view_every`` steps or ``view_seconds`` seconds, and blocks
the loop while the GUI's pause button is on (views still follow the camera while paused).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from fieldforge.apps.training.methods.base import Method
from fieldforge.apps.training.ply_scene import load_renderable
from fieldforge.apps.training.run import RunDir
from fieldforge.errors import FieldforgeError
from fieldforge.scenes import Scene


@dataclass(frozen=True)
class ViewerOptions:
    """The web server's address and render sizes (long side in pixels), and for a live viewer how
    often it refreshes (every ``view_every`` steps or ``view_seconds`` seconds, whichever first)."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_size: int = 512
    moving_size: int = 128
    view_every: int = 100
    view_seconds: float = 10.0

    def check(self) -> None:
        """One-line errors for a port out of range or a size or interval that is not positive."""
        if not 0 <= self.port <= 65535:
            raise FieldforgeError(f"--port must be in [0, 65535], got {self.port}")
        for name in ("max_size", "moving_size", "view_every", "view_seconds"):
            if not getattr(self, name) > 0:
                raise FieldforgeError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")


def claim_port(host: str, port: int) -> int:
    """``port`` when it can be listened on at ``host``; for 0, a free port the system picks.

    viser itself would silently move to the next port when ``port`` is taken, so a second viewer
    started on a taken port would not be where the user looks: here that is an error.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; a listener is not
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as e:
            raise FieldforgeError(f"--port {port}: cannot listen on {host} ({e.strerror or e}); "
                                  f"pass another port, or --port 0 for a free one") from None
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_viewer(options: ViewerOptions, method: Method, scene: Scene, run: RunDir
                ) -> Iterator[Callable[[int, Method], None]]:
    """The trainer's ``on_step`` hook of ``train --view``; the viewer stops when the block ends."""
    from fieldforge.apps.viewer.server import Viewer  # viser only when a viewer is asked for

    options.check()
    viewer = Viewer(method, scene, options.host, claim_port(options.host, options.port),
                    path_file=run.root / "camera_path.json", max_size=options.max_size,
                    moving_size=options.moving_size, live=True, refresh_steps=options.view_every,
                    refresh_seconds=options.view_seconds)
    print(f"viewer: {viewer.url}", flush=True)
    try:
        yield viewer.on_step
    finally:
        viewer.stop()


def serve(target: Path, options: ViewerOptions, device: str = "auto", path_file: Path | None = None,
          up: Tensor | None = None) -> None:
    """Serve a viewer of the run folder or 3DGS ``.ply`` at ``target`` until Ctrl-C. The camera
    path is saved to ``path_file`` (default ``RUN/camera_path.json`` or ``<stem>_camera_path.json``
    beside the .ply); ``up`` is the up axis of a camera-less .ply's starting orbit."""
    from fieldforge.apps.viewer.server import Viewer

    options.check()
    port = claim_port(options.host, options.port)  # before the run loads: a taken port fails at once
    method, scene = load_renderable(target, device, up)
    if path_file is None:
        ply = target.suffix.lower() == ".ply"
        path_file = (target.with_name(f"{target.stem}_camera_path.json") if ply
                     else RunDir(target).root / "camera_path.json")
    viewer = Viewer(method, scene, options.host, port, max_size=options.max_size,
                    moving_size=options.moving_size, path_file=path_file)
    print(f"viewer of {target}: {viewer.url} (Ctrl-C to stop)", flush=True)
    try:
        viewer.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
