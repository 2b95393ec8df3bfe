"""The ``fieldforge`` console script: one verb per module, errors on one line.

Each verb module exposes ``add_arguments(parser)`` and ``run(args) -> int | None``.
Benchmarks are verbs of ``fieldforge bench NAME``, one module each (``BENCHES``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

VERBS = {
    "train": ("fieldforge.apps.cli.train", "train a method on a scene (no DATA: the bundled scene)"),
    "eval": ("fieldforge.apps.cli.eval", "render a split of a run and write per-image metrics"),
    "render": ("fieldforge.apps.cli.render", "render a camera path to mp4 or PNGs"),
    "view": ("fieldforge.apps.cli.view", "browser viewer (viser) for a run"),
    "process": ("fieldforge.apps.cli.process", "photographs or a video to posed data (pycolmap)"),
    "export": ("fieldforge.apps.cli.export", "export a run: mesh, point cloud, 3DGS .ply, cameras"),
    "distill": ("fieldforge.apps.cli.distill", "train a field from a trained field"),
    "bench": (None, "benchmarks that print a table and write JSON"),
}

BENCHES = {
    "radiance": ("fieldforge.apps.bench.radiance", "train+eval field methods on a scene"),
    "signals": ("fieldforge.apps.bench.signals", "fit 2D/3D signals with each encoding"),
    "integrate": ("fieldforge.apps.bench.integrate", "Monte Carlo vs control variates"),
    "splat": ("fieldforge.apps.bench.splat", "rasterizer speed and memory"),
    "kernels": ("fieldforge.apps.bench.kernels", "fast kernels against their PyTorch references"),
    "psnr": ("fieldforge.apps.bench.psnr", "methods x scenes PSNR table"),
    "viewer": ("fieldforge.apps.bench.viewer", "frames per second of the viewer's render path"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldforge", description="Neural fields and Gaussian splats on PyTorch.")
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb, (module, help_) in VERBS.items():
        if verb == "bench":
            p = sub.add_parser("bench", help=help_)
            bsub = p.add_subparsers(dest="bench", required=True)
            for name, (bmod, bhelp) in BENCHES.items():
                mod = importlib.import_module(bmod)  # a verb that fails to import fails loudly
                bp = bsub.add_parser(name, help=bhelp)
                mod.add_arguments(bp)
                bp.set_defaults(_run=mod.run)
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(verb, help=help_)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fieldforge.errors import FieldforgeError

    from fieldforge import kernels

    args = build_parser().parse_args(argv)
    try:
        kernels.choice()  # a bad FIELDFORGE_KERNELS is refused before any work
        code = args._run(args)
    except FieldforgeError as e:
        print(f"fieldforge {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fieldforge {args.verb}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
