"""Pieces shared by the benchmarks that train runs: the machine description, budget parsing,
training a run to a budget through the ``train`` verb, peak memory of a process, atomic
writes, and running per-run functions in fresh processes (locally or on Ray).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from fieldforge.apps.training.run import RunDir
from fieldforge.errors import FieldforgeError

_STATUS = Path("/proc/self/status")


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def data_root() -> Path | None:
    """The folder holding the datasets the benchmarks default to (``FIELDFORGE_DATA``; None when unset)."""
    value = os.environ.get("FIELDFORGE_DATA")
    return Path(value) if value else None


def machine(threads: int | None = None) -> dict:
    """CPU model, logical cores, RAM (GiB), torch version and the torch threads per run."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "ram_gb": None if ram is None else round(ram, 1),
            "torch_threads": threads or torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def parse_minutes(text: str) -> list[float]:
    """Sorted positive training times from a comma list such as ``"2,5,10"``."""
    try:
        minutes = sorted(float(m) for m in text.split(","))
    except ValueError:
        raise FieldforgeError(f"--minutes {text!r}: expected comma-separated numbers") from None
    if not minutes or minutes[0] <= 0:
        raise FieldforgeError("--minutes: training times must be positive")
    return minutes


def train_budget(run_dir: Path, data: str, method: str, minutes: float | None = None, steps: int | None = None,
                 device: str = "cpu", overrides: Sequence[str] = (), downscale: int = 1,
                 teacher: str | None = None) -> None:
    """Train ``run_dir`` with the ``train`` verb until ``minutes`` of training time or ``steps``
    total steps; a run with a checkpoint is resumed from it (its saved settings win)."""
    from fieldforge.apps.api import train

    common = dict(method=method, out=run_dir, minutes=minutes, steps=steps, device=device)
    if RunDir(run_dir).checkpoint.is_file():
        train(data, resume=True, **common)
    else:
        train(data, downscale=downscale, overrides=overrides, teacher=teacher or None, **common)


def reset_peak_memory(device: str) -> None:
    """Start a new peak-memory window: Linux resets the process's peak RSS (VmHWM) on writing 5
    to /proc/self/clear_refs; elsewhere the window is the process lifetime (ru_maxrss)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mb() -> float:
    """The process's resident set now (MiB; Linux), or its peak so far elsewhere."""
    if _STATUS.is_file():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: str) -> float:
    """Peak memory (MiB) since :func:`reset_peak_memory`: CUDA allocated bytes on a GPU, else RSS."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    if _STATUS.is_file():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def map_processes(fn: Callable, tasks: Sequence, workers: int) -> list:
    """``[fn(t) for t in tasks]`` with each call in a fresh spawned process (so per-process peak
    memory is per task), ``workers`` at a time. A task's error is raised after the others finish."""
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as ex:
            return list(ex.map(fn, tasks))
    except BrokenProcessPool:
        raise FieldforgeError("a run's process died (out of memory?); finished work is kept, run again to resume") from None


def require_ray() -> None:
    """One-line error when Ray is not importable (checked before any work starts)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise FieldforgeError("--ray: Ray is not installed (pip install 'ray[default]')")


def map_ray(fn: Callable, tasks: Sequence, cpus_per_task: int) -> list:  # pragma: no cover (no Ray here)
    """``[fn(t) for t in tasks]`` as Ray tasks: joins the cluster named by ``RAY_ADDRESS`` (else
    starts a local one); each task runs in a worker process used once (``max_calls=1``), so peak
    memory is per task. Paths in the tasks must be on storage every node shares."""
    import ray

    ray.init(ignore_reinit_error=True)
    remote = ray.remote(num_cpus=cpus_per_task, max_calls=1)(fn)
    return ray.get([remote.remote(t) for t in tasks])
