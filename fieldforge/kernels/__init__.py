"""Fast CPU kernels beside their pure-PyTorch references, and the choice between them.

Every hot loop of fieldforge (hash-grid encoding, occupancy-grid traversal, packed volume
compositing, the Gaussian rasterizer's projection, binning and blending, SH colours) has two
implementations with the same semantics:

- the **reference**: the pure-PyTorch code in the module that owns the method (for example
  :class:`fieldforge.encoders.hashgrid.HashGrid`), correct on every device, documented and tested;
- the **fast path**: a fused, multi-threaded CPU kernel in this package, compiled by numba
  (LLVM, shipped in numba's wheel: no system compiler) at first use and cached on disk; one
  module, :mod:`fieldforge.kernels.linear` (MLP layers fused with their ReLU), calls oneDNN through
  PyTorch instead and needs no compilation.

The entry point of each kernel (the public function or module of the owning layer) asks
:func:`enabled` whether to take the fast path for its tensors. ``FIELDFORGE_KERNELS`` chooses:

- ``auto`` (default): the fast path for CPU tensors when numba imports, else the reference;
- ``numba``: the fast path (an error if numba cannot be imported);
- ``torch``: always the reference.

Any other value raises :class:`~fieldforge.errors.FieldforgeError` (one line at the CLI). When the
fast path cannot be used (numba missing, or a kernel fails to compile), one line on stderr says
which path is used instead and why, and work continues on the reference.

The kernels run on ``torch.get_num_threads()`` threads. They are deterministic for a given
input: work is split so that no two threads add into the same value (by hash-grid level, by
ray, by tile with per-intersection partial sums reduced in a fixed order), so results do not
depend on the thread count either.

This package imports nothing else of fieldforge but :mod:`fieldforge.errors`; numba is imported
lazily, on the first kernel call, so that the command line starts as fast without it.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import torch

from fieldforge.errors import FieldforgeError

CHOICES = ("auto", "numba", "torch")
_state: dict[str, Any] = {"numba": None, "reason": "", "warned": False}
_launch = threading.Lock()  # numba's workqueue pool takes one launch at a time (see _jit)


def choice() -> str:
    """The validated value of ``FIELDFORGE_KERNELS`` (default ``auto``)."""
    value = os.environ.get("FIELDFORGE_KERNELS", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise FieldforgeError(f"FIELDFORGE_KERNELS={value!r} is not one of {', '.join(CHOICES)}")
    return value


def numba_available() -> bool:
    """Whether numba imports (imported once, on first call)."""
    if _state["numba"] is None:
        try:
            import numba  # noqa: F401
        except Exception as e:  # ImportError, or a broken install (llvmlite/numpy mismatch)
            _state["numba"], _state["reason"] = False, f"numba cannot be imported ({type(e).__name__}: {e})"
        else:
            _state["numba"] = True
    return bool(_state["numba"])


def disable(reason: str) -> None:
    """Use the reference path from now on in this process; say so once on stderr."""
    _state["numba"], _state["reason"] = False, reason
    _warn()


def _warn() -> None:
    if not _state["warned"]:
        _state["warned"] = True
        print(f"fieldforge: fast kernels unavailable, using the PyTorch reference path: {_state['reason']}",
              file=sys.stderr)


def backend() -> str:
    """``"numba"`` or ``"torch"``: the path CPU tensors take now."""
    value = choice()
    if value == "torch":
        return "torch"
    if numba_available():
        return "numba"
    if value == "numba":
        raise FieldforgeError(f"FIELDFORGE_KERNELS=numba but {_state['reason']}")
    _warn()
    return "torch"


def enabled(*tensors: torch.Tensor) -> bool:
    """True when the fast path should run for these tensors (all on the CPU, backend numba)."""
    if any(t.device.type != "cpu" for t in tensors):
        return False
    return backend() == "numba"


def threads() -> int:
    """Set numba's thread count to torch's (bounded by numba's pool) and return it."""
    import numba

    from fieldforge.kernels import _jit  # noqa: F401  (picks numba's threading layer before the pool starts)

    want = torch.get_num_threads()
    current = numba.get_num_threads()  # starts numba's pool
    if torch.get_num_threads() != want:  # an OpenMP pool may reset torch's count: keep the user's
        torch.set_num_threads(want)
    n = max(1, min(want, numba.config.NUMBA_NUM_THREADS))
    if current != n:
        numba.set_num_threads(n)
    return n


def as_array(t: torch.Tensor, dtype: torch.dtype, name: str, kernel: str):
    """A C-contiguous numpy view (no copy when possible) of ``t`` as ``dtype``, checked to be on
    the CPU; raises ValueError naming the argument otherwise."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{kernel}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{kernel}: {name} must be on the CPU, got {t.device}")
    return t.detach().to(dtype).contiguous().numpy()


class Unavailable(RuntimeError):
    """Raised by :func:`call` when a kernel cannot be compiled; the caller takes the reference path."""


def call(kernel, *args):
    """Run a compiled kernel on :func:`threads` threads. If numba fails to compile it, the fast
    path is disabled for the rest of the process (one line on stderr) and :class:`Unavailable`
    is raised so that the entry point falls back to the reference."""
    from numba.core.errors import NumbaError

    try:
        with _launch:
            threads()
            return kernel(*args)
    except NumbaError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        disable(f"kernel {getattr(kernel, '__name__', kernel)} failed to compile ({first})")
        raise Unavailable(str(e)) from None
