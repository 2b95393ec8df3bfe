"""``fieldforge view RUN|SCENE.ply``: a browser viewer (viser) of a trained run or a 3DGS .ply.

    fieldforge view RUN|SCENE.ply [--host 127.0.0.1] [--port 8080] [--max-size 512] [--path-file FILE]

See :mod:`fieldforge.apps.viewer.session`; ``train --view`` takes the same server options
(:func:`add_live_arguments`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fieldforge.apps.training.ply_scene import parse_up
from fieldforge.apps.viewer.session import ViewerOptions, serve


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the viewer's web server and render sizes (shared by ``view`` and ``train --view``)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind the viewer to (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8080, help="viewer port (0: a free one, printed; a taken port is an error)")
    p.add_argument("--max-size", type=int, default=512, help="long side in pixels of the render at rest")
    p.add_argument("--moving-size", type=int, default=128, help="long side in pixels while the camera moves")


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    """``train --view`` and its options."""
    p.add_argument("--view", action="store_true", help="watch the run live in a browser viewer (see `fieldforge view`)")
    p.add_argument("--view-every", type=int, default=100, help="with --view: re-render the views every N steps ...")
    p.add_argument("--view-seconds", type=float, default=10.0, help="... or every S seconds, whichever comes first")
    add_server_arguments(p)


def viewer_options(args: argparse.Namespace) -> ViewerOptions:
    """The server options given on the command line."""
    live = {"view_every": args.view_every, "view_seconds": args.view_seconds} if hasattr(args, "view_every") else {}
    return ViewerOptions(host=args.host, port=args.port, max_size=args.max_size, moving_size=args.moving_size, **live)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (from fieldforge train) or a 3D Gaussian splat .ply")
    add_server_arguments(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--path-file", default=None, help="camera-path JSON to save (default: RUN/camera_path.json)")
    p.add_argument("--up", default=None, metavar="X,Y,Z",
                   help="a .ply without cameras.json: the world's up axis of its starting orbit (default: guessed)")


def run(args: argparse.Namespace) -> int:
    serve(Path(args.run), viewer_options(args), args.device, Path(args.path_file) if args.path_file else None,
          parse_up(args.up))
    return 0
