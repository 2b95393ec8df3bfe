"""The numba decorators every kernel uses (imported only by kernel modules, never at start-up).

``jit``: a serial kernel; ``pjit``: a kernel with ``prange`` loops on numba's thread pool. Both
are cached on disk next to this package (or in the user's cache directory when that is not
writable, numba's own fallback), so a process compiles a kernel once per machine and version.

The thread pool is numba's ``workqueue`` layer: its workers sleep between kernels. numba's
OpenMP layer shares libgomp with PyTorch, and its workers keep spinning after a kernel ends,
taking the cores from the PyTorch operations that follow (and resetting PyTorch's thread
count when the pool starts). The workqueue layer must not be entered by two threads at once,
so :func:`fieldforge.kernels.call` serialises kernel launches with a lock.

``fma(a, b, c)``: a * b + c rounded once (LLVM's ``llvm.fma``: the FMA instruction where the CPU
has one, else the C library's ``fma``), in the precision of its arguments. ``pow2(n)``: 2^n as a
float32 for an int32 -126 <= n <= 127, from its bits (no call, so loops using it vectorise).
"""

from __future__ import annotations

import functools

import numba
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

numba.config.THREADING_LAYER = "workqueue"

jit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")
pjit = functools.partial(numba.njit, cache=True, nogil=True, parallel=True, error_model="numpy")


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding, for three floats of one type."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return a(a, b, c), codegen


@intrinsic
def pow2(typingctx, n):
    """2^n (float32) for an int32 n in [-126, 127]: the exponent field n + 127, no mantissa."""
    if n != types.int32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.shl(builder.add(args[0], ir.Constant(ir.IntType(32), 127)), ir.Constant(ir.IntType(32), 23))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(n), codegen
