"""The kernel layer's choice of path: FIELDFORGE_KERNELS, fallback with one line, compile failures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fieldforge import kernels
from fieldforge.errors import FieldforgeError


@pytest.fixture
def fresh_state(monkeypatch):
    """Isolate the module's cached availability and warning flags."""
    monkeypatch.setattr(kernels, "_state", {"numba": None, "reason": "", "warned": False})


def test_choice_values(monkeypatch, fresh_state):
    for value, expected in (("torch", "torch"), ("numba", "numba"), ("auto", "numba"), ("", "numba"), (" Auto ", "numba")):
        monkeypatch.setenv("FIELDFORGE_KERNELS", value)
        assert kernels.backend() == expected
    monkeypatch.delenv("FIELDFORGE_KERNELS")
    assert kernels.backend() == "numba"
    monkeypatch.setenv("FIELDFORGE_KERNELS", "torch")
    assert not kernels.enabled(torch.zeros(1))


def test_unknown_value_is_refused(monkeypatch, fresh_state):
    monkeypatch.setenv("FIELDFORGE_KERNELS", "cuda-magic")
    with pytest.raises(FieldforgeError, match="FIELDFORGE_KERNELS='cuda-magic' is not one of auto, numba, torch"):
        kernels.backend()


def test_unknown_value_at_the_cli_is_one_line_exit_2(tmp_path):
    env = {"FIELDFORGE_KERNELS": "fast", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "fieldforge.apps.cli.main", "eval", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "FIELDFORGE_KERNELS='fast'" in lines[0] and "Traceback" not in proc.stderr


def test_missing_numba_falls_back_with_one_line(monkeypatch, fresh_state, capsys):
    kernels._state.update(numba=False, reason="numba cannot be imported (ImportError: test)")
    monkeypatch.setenv("FIELDFORGE_KERNELS", "auto")
    assert kernels.backend() == "torch" and not kernels.enabled(torch.zeros(1))
    assert kernels.backend() == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fieldforge: fast kernels unavailable, using the PyTorch reference path: "
                   "numba cannot be imported (ImportError: test)"]
    monkeypatch.setenv("FIELDFORGE_KERNELS", "numba")
    with pytest.raises(FieldforgeError, match="FIELDFORGE_KERNELS=numba but numba cannot be imported"):
        kernels.backend()


def test_compile_failure_disables_the_fast_path(monkeypatch, fresh_state, capsys):
    from fieldforge.kernels._jit import jit

    @jit
    def broken(a):
        return a.no_such_attribute  # numba fails to type this

    monkeypatch.setenv("FIELDFORGE_KERNELS", "auto")
    assert kernels.backend() == "numba"
    with pytest.raises(kernels.Unavailable):
        kernels.call(broken, torch.zeros(3).numpy())
    assert kernels.backend() == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kernel broken failed to compile" in err[0]


def test_cpu_only(fresh_state):
    meta = torch.zeros(2, device="meta")
    assert not kernels.enabled(meta)
    with pytest.raises(ValueError, match="k: x must be on the CPU"):
        kernels.as_array(meta, torch.float32, "x", "k")
    with pytest.raises(ValueError, match="k: x must be a torch.Tensor"):
        kernels.as_array([1.0], torch.float32, "x", "k")


def test_threads_follow_torch():
    import numba

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert kernels.threads() == 1 and numba.get_num_threads() == 1
        torch.set_num_threads(2)
        assert kernels.threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(old)


def test_cli_start_does_not_import_numba():
    code = "import sys; from fieldforge.apps.cli import main; main.build_parser(); print('numba' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_starting_the_pool_keeps_torch_thread_count():
    """numba's OpenMP pool shares libgomp with torch; starting it must not undo torch.set_num_threads."""
    code = ("import torch; torch.set_num_threads(1); from fieldforge import kernels; "
            "print(kernels.threads(), torch.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("preset,want", [(None, "10000"), ("300000", "300000")])
def test_openmp_spin_default_is_set_before_torch_loads_and_never_overrides(preset, want):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    code = "import fieldforge, os, sys; print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [want, "False"]  # set, and torch not yet loaded by importing fieldforge
