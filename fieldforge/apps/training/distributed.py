"""Data-parallel training on one machine: ``fieldforge train --nproc N`` or under ``torchrun``.

Each of the N ranks (processes) holds a full replica of the method. A step: every rank draws
its share of the batch (:func:`share`) from its own generator (seeded by its rank) and
DistributedDataParallel averages the gradients, weighted so the update is that of one process
on the whole batch; optimiser states then stay identical on every rank. Buffers a step
updates from the model (the occupancy grid: its random points come from the global torch RNG,
seeded alike on every rank) are also broadcast from rank 0. Rank 0 writes logs,
checkpoints and the progress bar; decisions that depend on a clock (checkpoint now, minutes
budget spent) are rank 0's, broadcast to all (:func:`agree`) so all ranks stop together. The
run directory must be one folder every rank sees (all ranks read config and checkpoint).
With ``--view`` the live viewer runs on rank 0; its pause holds every rank (collectives wait up
to ``TIMEOUT``).

Exact resume with N ranks: the checkpoint holds rank 0's method state (identical model and
optimisers on every rank; rank 0's generator, so single-process tools load it as usual), the
global torch RNG (the same on every rank) and every rank's own state (``"ranks"``, e.g. its
ray generator, from :meth:`rank_state`). Resuming with the same N continues exactly as an
uninterrupted N-rank run; resuming with another N (1 included) continues the same model,
optimisers and schedules but draws other rays, so it is not bit-exact (a note is printed).

Process groups: gloo for CPU tensors, nccl for CUDA ones (both when CUDA is available).
:func:`launch` spawns N local processes with torchrun's environment (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT = a free port), each with cores / N torch
threads; :func:`process_group` joins the group those variables describe and always destroys
it. A child's :class:`FieldforgeError` is re-raised in the parent with its one-line message.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fieldforge.errors import FieldforgeError

TIMEOUT = datetime.timedelta(hours=24)  # of collectives: a rank may wait that long for rank 0 (viewer pause)


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the rank that writes logs, checkpoints and output."""
    return rank() == 0


# ---------------------------------------------------------------------------- collectives
def share(n: int) -> tuple[int, float]:
    """This rank's share of a batch of ``n`` items and its fraction ``share / n``: the first
    ``n % world`` ranks take one more. Scaling a rank's mean loss by ``fraction * world`` makes
    DDP's gradient average equal the gradient of the mean over the whole batch."""
    w, r = world_size(), rank()
    mine = n // w + (r < n % w)
    return mine, mine / n


def all_sum(*values: float) -> list[float]:
    """Sums of ``values`` over all ranks (the values themselves with one process)."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (for clock-based decisions)."""
    return bool(agree_int(int(flag)))


def agree_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (a plan's horizon, estimated from rank 0's clock)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.broadcast(t, 0)
    return int(t.item())


def broadcast_state(module: nn.Module) -> None:
    """Overwrite the persistent state (``state_dict`` tensors) of ``module`` with rank 0's, in place."""
    if world_size() == 1:
        return
    for t in module.state_dict().values():
        dist.broadcast(t.view(torch.uint8) if t.dtype == torch.bool else t, 0)


def gather_rank_states(method: nn.Module) -> list[dict]:
    """Every rank's ``method.rank_state()``, in rank order (on every rank)."""
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, method.rank_state())
    return out


def load_rank_states(method: nn.Module, states: list[dict] | None) -> None:
    """After a resume, give this rank its saved ``rank_state`` (``states``: the checkpoint's,
    None for a single-process checkpoint); ranks the checkpoint has none for start fresh."""
    n = 1 if states is None else len(states)
    if n != world_size() and is_main():
        print(f"note: resuming a run checkpointed with {n} process(es) on {world_size()}: training continues "
              "but not bit-exactly (other rays are drawn)", file=sys.stderr)
    if states is not None and rank() < n:
        method.load_rank_state(states[rank()])
    elif rank() > 0:
        method.load_rank_state(None)  # its own fresh generator, not a copy of rank 0's saved one


# ---------------------------------------------------------------------------- DDP
class _Objective(nn.Module):
    """Holds the trained module so DDP sees its parameters; ``forward(fn, *args, **kwargs)``
    runs a loss closure, so the whole differentiable step (ray marching included) is DDP's forward."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def data_parallel(module: nn.Module) -> DistributedDataParallel:
    """A DDP wrapper of ``module`` called as ``wrapper(fn, *args, **kwargs)``: runs ``fn`` (which
    uses ``module``) as DDP's forward; the backward of its outputs averages the gradients of
    ``module``'s parameters over the ranks. Parameters are broadcast from rank 0 here.
    ``static_graph``: every step uses the same parameters (unused ones, e.g. of a disabled
    branch, are found once instead of by a graph traversal per step)."""
    return DistributedDataParallel(_Objective(module), static_graph=True)


def replicate(method: nn.Module) -> None:
    """Make ``method`` train data-parallel on the current process group (no-op with one rank).
    Methods opt in with ``supports_distributed``, ``distribute()``, ``rank_state() -> dict`` and
    ``load_rank_state(state)`` (``None``: this rank's fresh state)."""
    if world_size() == 1:
        return
    if not method.supports_distributed:
        raise FieldforgeError(
            f"method {method.name!r} cannot train on several processes (--nproc / torchrun): its densification "
            "adds and removes parameters, which DistributedDataParallel does not support; use one process")
    method.distribute()


# ---------------------------------------------------------------------------- processes
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join the process group of torchrun's environment variables for the block, then destroy
    it (also on error). No-op for a single process or when a group already exists."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or dist.is_initialized():
        yield
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", init_method="env://", timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FieldforgeError(f"process group at {where} (WORLD_SIZE={world}): {first[:200]}") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def _child(index: int, nproc: int, port: int, outcomes: str, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(nproc),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, _cores() // nproc))
    try:
        with process_group():
            outcome = (True, fn(*args))
    except FieldforgeError as e:
        outcome = (False, str(e))
    with open(Path(outcomes) / f"{index}.pkl", "wb") as f:
        pickle.dump(outcome, f)
    # Leave without interpreter finalisation: objects still holding the destroyed gloo group
    # (the DDP reducer) would otherwise be freed while gloo's threads tear down, which can
    # abort the process ("terminate called without an active exception") after its work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if outcome[0] else 2)


def launch(nproc: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on ``nproc`` new local processes (ranks) and return rank 0's result.
    ``fn`` must be importable (module level). A rank's FieldforgeError is raised here with its
    message (the lowest rank's); the other ranks get a few seconds to stop, then are terminated."""
    import torch.multiprocessing as mp

    spawn_log = logging.getLogger("torch.multiprocessing.spawn")  # "Terminating process ..." lines
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="fieldforge-ranks-") as outcomes:
        ctx = mp.start_processes(_child, args=(nproc, free_port(), outcomes, fn, args), nprocs=nproc,
                                 join=False, start_method="spawn")
        try:
            while not ctx.join(grace_period=5.0):
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            errors = [value for ok, value in _outcomes(outcomes, nproc) if ok is False]
            if errors:
                raise FieldforgeError(errors[0]) from None
            raise
        finally:
            spawn_log.setLevel(level)
            _stop(ctx.processes)
        ok, value = _outcomes(outcomes, nproc)[0]
        if ok is None:  # rank 0 returned nothing: it was interrupted (Ctrl-C reaches every rank)
            raise KeyboardInterrupt
        return value


def _stop(processes: list, grace: float = 5.0) -> None:
    """Interrupt the ranks still running (they exit as on Ctrl-C), terminate any left after ``grace`` s."""
    for p in processes:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)
    for p in processes:
        p.join(grace)
        if p.is_alive():
            p.terminate()
            p.join()


def _outcomes(folder: str, nproc: int) -> list[tuple[bool | None, Any]]:
    """(ok, value or error message) per rank, in rank order; (None, None) for a rank that wrote none."""
    out = []
    for i in range(nproc):
        path = Path(folder) / f"{i}.pkl"
        out.append(pickle.loads(path.read_bytes()) if path.is_file() else (None, None))
    return out


def run_ranks(nproc: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on ``nproc`` ranks: in this process for 1, spawned by :func:`launch` for
    more; under torchrun (WORLD_SIZE set) as this process's rank of torchrun's group."""
    env_world = os.environ.get("WORLD_SIZE")
    if env_world is None:
        if nproc < 1:
            raise FieldforgeError(f"--nproc must be >= 1, got {nproc}")
        return fn(*args) if nproc == 1 else launch(nproc, fn, *args)
    if nproc not in (1, int(env_world)):
        raise FieldforgeError(f"--nproc {nproc} conflicts with torchrun's WORLD_SIZE={env_world}; give only one")
    with process_group():
        return fn(*args)
