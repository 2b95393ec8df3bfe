"""``fieldforge bench psnr``: train and evaluate methods x scenes under a fixed budget and write
the results table the field uses.

Every (scene, method) pair is one run, ``RUNS/<scene>/<method>``, trained in its own fresh
process (``--workers`` at a time, or as Ray tasks with ``--ray``). A run trains to each budget
in turn (``--minutes 2,5,10`` of training time, resuming exactly from its checkpoint between
budgets; or ``--steps N``), and is evaluated after each on ``--test-images`` evenly spaced test
views, on the scene's background. The eval metrics of each budget are kept as
``RUN/bench/<budget>.json`` (the ``eval`` verb's metrics.json, per-image metrics included, plus
``peak_memory_mb``); a budget whose file exists is not trained again, and an interrupted run
resumes from its last checkpoint.

Writes ``OUT/results.json``::

    {"protocol": {...}, "rows": [{"scene", "method", "psnr", "ssim", "train_seconds",
      "render_seconds_per_image", "peak_memory_mb", "params", "steps", "num_images", "run"}],
     "curves": [{"scene", "method", "points": [{"budget", "steps", "train_seconds", "psnr", "ssim"}]}]}

(one row per run, at the last budget), ``OUT/results.md`` (protocol and table, also printed) and
``OUT/psnr_vs_time.png`` (test PSNR against training time, one panel per scene, one line per
method, one point per budget). ``train_seconds`` is time inside training steps (checkpoints and
evaluation excluded); ``peak_memory_mb`` the run's peak RSS while training (on CUDA: peak
allocated GPU memory), the maximum over its budgets; ``params`` the trainable parameters.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import torch

from fieldforge.apps.bench.runs import (machine, map_processes, map_ray, parse_minutes, peak_memory_mb,
                                        require_ray, reset_peak_memory, train_budget)
from fieldforge.apps.training.files import write_atomic
from fieldforge.apps.training.config import apply_overrides, read_config
from fieldforge.apps.training.evaluate import evaluate
from fieldforge.apps.training.methods import get_method
from fieldforge.apps.training.run import RunDir, default_scene_path, resolve_device
from fieldforge.errors import FieldforgeError
from fieldforge.scenes.loaders import detect_format

TABLE_KEYS = ("psnr", "ssim", "train_seconds", "render_seconds_per_image", "peak_memory_mb", "params")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", default="ngp,splat,nerf", help="comma-separated method names")
    p.add_argument("--scenes", default=None, help="comma-separated dataset folders (default: the bundled scene)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", default="2,5", help="comma-separated training times; the last is the table's")
    budget.add_argument("--steps", type=int, default=None, help="train every run for exactly N steps instead")
    p.add_argument("--test-images", type=int, default=25, help="evenly spaced test views per evaluation")
    p.add_argument("--downscale", type=int, default=1, help="downscale every scene's images by N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="[METHOD:]KEY=VALUE",
                   help="method option override, for every method or only METHOD (repeatable)")
    p.add_argument("--workers", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / workers)")
    p.add_argument("--ray", action="store_true",
                   help="run the runs as tasks on a Ray cluster (RAY_ADDRESS; --workers is then unused)")
    p.add_argument("--out", default="benchmarks/results/psnr", help="folder for results.{json,md} and the plot")
    p.add_argument("--runs", default=None, help="folder for the run directories (default: OUT/runs)")
    p.add_argument("--device", default="cpu")


def _method_overrides(methods: list[str], pairs: list[str]) -> dict[str, list[str]]:
    """Split ``[METHOD:]KEY=VALUE`` overrides per method and check them against each config."""
    out: dict[str, list[str]] = {m: [] for m in methods}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        scope, _, key = key.rpartition(":")
        kv = key + eq + value
        if scope and scope not in out:
            raise FieldforgeError(f"--set {pair}: {scope!r} is not in --methods")
        for m in [scope] if scope else methods:
            out[m].append(kv)
    for m, kvs in out.items():
        apply_overrides(get_method(m).Config(), kvs)
    return out


def _scenes(text: str | None) -> dict[str, str]:
    """Scene name (folder name) -> path, each checked to be a dataset."""
    paths = [str(default_scene_path())] if text is None else [s for s in text.split(",") if s]
    if not paths:
        raise FieldforgeError("--scenes: no dataset folder given")
    scenes: dict[str, str] = {}
    for path in paths:
        detect_format(path)  # DataError naming the folder when missing or not a dataset
        name = Path(path).resolve().name
        if name in scenes:
            raise FieldforgeError(f"--scenes: {scenes[name]} and {path} have the same folder name {name!r}")
        scenes[name] = path
    return scenes


def _budget_name(budget: dict) -> str:
    (kind, value), = budget.items()
    return f"{kind}-{value:g}"


def _record(run_dir: str, budget: dict) -> Path:
    return Path(run_dir) / "bench" / f"{_budget_name(budget)}.json"


def _check_run(run_dir: Path, scene: str, method: str, downscale: int) -> None:
    """Refuse to resume a run directory that holds another scene, method or downscale."""
    if not RunDir(run_dir).config.is_file():
        return
    t = read_config(RunDir(run_dir).config)["train"]
    if (t.get("method"), Path(t.get("data") or "").resolve(), t.get("downscale")) != \
            (method, Path(scene).resolve(), downscale):
        raise FieldforgeError(f"{run_dir}: holds a run of {t.get('method')} on {t.get('data')} "
                              f"(downscale {t.get('downscale')}); choose another --runs")


def bench_run(task: dict) -> None:
    """Train one run to each budget not recorded yet and record its evaluation (run in a child)."""
    torch.set_num_threads(task["threads"])
    run_dir, device = Path(task["run"]), task["device"]
    try:
        for budget in task["budgets"]:
            record = _record(task["run"], budget)
            if record.is_file():
                continue
            reset_peak_memory(device)
            train_budget(run_dir, task["scene"], task["method"], budget.get("minutes"), budget.get("steps"),
                         device, task["overrides"], task["downscale"])
            peak = peak_memory_mb(device)
            r = evaluate(run_dir, "test", task["test_images"], device, write_images=False)
            write_atomic(record, json.dumps({**r, "budget": budget, "peak_memory_mb": peak}, indent=2) + "\n")
    except FieldforgeError as e:  # re-raised as a plain FieldforgeError, which pickles across processes
        raise FieldforgeError(f"{task['scene_name']}/{task['method']}: {e}") from None


def _row(task: dict, records: list[dict]) -> dict:
    last = records[-1]
    return {"scene": task["scene_name"], "method": task["method"], "psnr": last["psnr"], "ssim": last["ssim"],
            "train_seconds": last["train_seconds"], "render_seconds_per_image": last["render_seconds_per_image"],
            "peak_memory_mb": max(r["peak_memory_mb"] for r in records), "params": last["params"],
            "steps": last["steps"], "num_images": last["num_images"], "run": task["run"]}


def markdown(protocol: dict, rows: list[dict]) -> str:
    """The protocol as a bullet list, then the table (PSNR dB, SSIM, seconds, MiB)."""
    budget = protocol["budget"]
    m = protocol["machine"]
    lines = ["# PSNR benchmark", "",
             f"- budget per run: {', '.join(f'{v:g} min' for v in budget['minutes'])} of training time"
             if "minutes" in budget else f"- budget per run: {budget['steps']} steps",
             f"- test images: {protocol['test_images']} evenly spaced of the test split; downscale {protocol['downscale']}",
             *(f"- {name}: {s['format']}, {s['resolution']}, background {s['background']}, {s['images']} "
               f"test images ({s['path']})" for name, s in protocol["scenes"].items()),
             f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch {m['torch']}, "
             f"threads per run: {m['torch_threads']}, runs at a time: {protocol['workers']}, device: {protocol['device']}",
             f"- overrides: {', '.join(protocol['overrides']) or 'none'}", "",
             "| scene | method | PSNR | SSIM | train time (s) | render (s/image) | peak memory (MB) | params |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['scene']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['train_seconds']:.1f} | "
              f"{r['render_seconds_per_image']:.3f} | {r['peak_memory_mb']:.0f} | {r['params']:,} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(curves: list[dict]) -> bytes:
    """PNG of test PSNR against training time: a panel per scene, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = list(dict.fromkeys(c["scene"] for c in curves))
    fig, axes = plt.subplots(1, len(scenes), figsize=(5 * len(scenes), 4), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        for c in (c for c in curves if c["scene"] == scene):
            ax.plot([p["train_seconds"] for p in c["points"]], [p["psnr"] for p in c["points"]], "o-", label=c["method"])
        ax.set(title=scene, xlabel="training time (s)", ylabel="test PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    methods = list(dict.fromkeys(m for m in args.methods.split(",") if m))
    if not methods:
        raise FieldforgeError("--methods: no method given")
    overrides = _method_overrides(methods, args.overrides)  # also rejects unknown methods
    scenes = _scenes(args.scenes)
    if args.steps is not None and args.steps < 1:
        raise FieldforgeError("--steps: must be at least 1")
    budgets = [{"steps": args.steps}] if args.steps is not None else [{"minutes": m} for m in parse_minutes(args.minutes)]
    if args.workers < 1 or args.test_images < 1:
        raise FieldforgeError("--workers and --test-images must be at least 1")
    resolve_device(args.device)
    if args.ray:
        require_ray()
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / "runs"
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    tasks = [{"scene": path, "scene_name": name, "method": m, "run": str(runs / name / m), "budgets": budgets,
              "overrides": overrides[m], "downscale": args.downscale, "test_images": args.test_images,
              "device": args.device, "threads": threads} for name, path in scenes.items() for m in methods]
    for t in tasks:
        _check_run(Path(t["run"]), t["scene"], t["method"], args.downscale)
    pending = [t for t in tasks if not all(_record(t["run"], b).is_file() for b in budgets)]
    if pending and args.ray:
        map_ray(bench_run, pending, threads)
    elif pending:
        map_processes(bench_run, pending, args.workers)
    rows, curves, scene_protocols = [], [], {}
    for t in tasks:
        records = [json.loads(_record(t["run"], b).read_text()) for b in budgets]
        rows.append(_row(t, records))
        curves.append({"scene": t["scene_name"], "method": t["method"], "points": [
            {"budget": _budget_name(r["budget"]), **{k: r[k] for k in ("steps", "train_seconds", "psnr", "ssim")}}
            for r in records]})
        scene_protocols[t["scene_name"]] = {"path": t["scene"], "format": detect_format(t["scene"]),
                                            **records[-1]["protocol"]}
    protocol = {"budget": budgets[0] if args.steps is not None else {"minutes": [b["minutes"] for b in budgets]},
                "split": "test", "test_images": args.test_images, "downscale": args.downscale,
                "scenes": scene_protocols, "overrides": args.overrides, "workers": args.workers,
                "device": args.device, "machine": machine(threads),
                "train_seconds": "time inside training steps (checkpoints and evaluation excluded)",
                "peak_memory_mb": "peak RSS of the run's process while training (CUDA: peak allocated GPU memory)",
                "render_seconds_per_image": "mean wall time of one test render"}
    md = markdown(protocol, rows)
    write_atomic(out / "psnr_vs_time.png", plot(curves))
    write_atomic(out / "results.md", md)
    write_atomic(out / "results.json", json.dumps({"protocol": protocol, "rows": rows, "curves": curves}, indent=2) + "\n")
    print(md + f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'psnr_vs_time.png'}")
    return 0
