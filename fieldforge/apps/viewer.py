"""``fieldforge view RUN``: a browser viewer (viser) of a trained run; also the live viewer of
``fieldforge train --view``.

    fieldforge view RUN|SCENE.ply [--host 127.0.0.1] [--port 8080] [--max-size 512] [--path-file FILE]

Open http://HOST:PORT in a browser. The server renders each browser's view with
``method.render`` (:mod:`fieldforge.apps.viewer_render` converts viser cameras) at
``--moving-size`` pixels on the long side while the camera moves and at ``--max-size`` once it has
rested for 0.3 s. The GUI picks the output (rgb, depth, opacity and any extra image a
method returns), the time of dynamic scenes, the background colour, and edits a camera path
(keyframes at the current view and time) saved as the JSON ``fieldforge render --path`` reads.
Clicking a training-camera frustum moves the view to it.

Live (``train --view``): the viewer runs in the training process; :meth:`Viewer.on_step` is the
trainer's hook. It renders in the training thread between steps (never concurrently with a
step), refreshes the views every ``--view-every`` steps or ``--view-seconds`` seconds, and blocks
the loop while the GUI's pause button is on (views still follow the camera while paused).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from fieldforge.apps.methods.base import Method
from fieldforge.apps.run import RunDir, load_run
from fieldforge.errors import FieldforgeError
from fieldforge.scenes import Scene


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the viewer's web server and render sizes (shared by ``view`` and ``train --view``)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind the viewer to (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8080, help="viewer port (0: a free one, printed; a taken port is an error)")
    p.add_argument("--max-size", type=int, default=512, help="long side in pixels of the render at rest")
    p.add_argument("--moving-size", type=int, default=128, help="long side in pixels while the camera moves")


def check_server_arguments(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise FieldforgeError(f"--port must be in [0, 65535], got {args.port}")
    for name in ("max_size", "moving_size") + (("view_every", "view_seconds") if hasattr(args, "view_every") else ()):
        if not getattr(args, name) > 0:
            raise FieldforgeError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")


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


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    """``train --view`` and its options."""
    p.add_argument("--view", action="store_true", help="watch the run live in a browser viewer (see `fieldforge view`)")
    p.add_argument("--view-every", type=int, default=100, help="with --view: re-render the views every N steps ...")
    p.add_argument("--view-seconds", type=float, default=10.0, help="... or every S seconds, whichever comes first")
    add_server_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (from fieldforge train) or a 3D Gaussian splat .ply")
    add_server_arguments(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--path-file", default=None, help="camera-path JSON to save (default: RUN/camera_path.json)")
    p.add_argument("--up", default=None, metavar="X,Y,Z",
                   help="a .ply without cameras.json: the world's up axis of its starting orbit (default: guessed)")


@contextlib.contextmanager
def live_viewer(args: argparse.Namespace, method: Method, scene: Scene, run: RunDir
                ) -> Iterator[Callable[[int, Method], None] | None]:
    """The trainer's ``on_step`` hook of ``train --view`` (None without ``--view``); the viewer
    stops when the block ends."""
    if not args.view:
        yield None
        return
    from fieldforge.apps.viewer_server import Viewer  # viser only when a viewer is asked for

    check_server_arguments(args)
    viewer = Viewer(method, scene, args.host, claim_port(args.host, args.port), path_file=run.root / "camera_path.json",
                    max_size=args.max_size, moving_size=args.moving_size, live=True,
                    refresh_steps=args.view_every, refresh_seconds=args.view_seconds)
    print(f"viewer: {viewer.url}", flush=True)
    try:
        yield viewer.on_step
    finally:
        viewer.stop()


def run(args: argparse.Namespace) -> int:
    from fieldforge.apps.viewer_server import Viewer

    check_server_arguments(args)
    port = claim_port(args.host, args.port)  # before the run loads: a taken port fails at once
    target = Path(args.run)
    if target.suffix.lower() == ".ply":
        from fieldforge.apps.ply_scene import parse_up, ply_scene
        from fieldforge.apps.run import resolve_device

        method, scene, note = ply_scene(target, resolve_device(args.device), parse_up(args.up))
        print(note)
        path_file = args.path_file or target.with_name(f"{target.stem}_camera_path.json")
    else:
        method, _, scene = load_run(target, args.device)
        path_file = args.path_file or RunDir(target).root / "camera_path.json"
    viewer = Viewer(method, scene, args.host, port, max_size=args.max_size, moving_size=args.moving_size,
                    path_file=path_file)
    print(f"viewer of {args.run}: {viewer.url} (Ctrl-C to stop)", flush=True)
    try:
        viewer.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    return 0
