"""The console script's plumbing: verbs import nothing heavy until used, and a verb whose module
fails to import is an error, not a missing subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fieldforge.apps.cli import main as cli


def test_help_and_headless_training_do_not_import_the_viewer_or_optional_libraries():
    code = ("import sys; from fieldforge.apps.cli.main import build_parser; build_parser(); "
            "import fieldforge.apps.cli.train; "
            "print(sorted(m for m in ('viser', 'open3d', 'pycolmap', 'numba', 'scipy', 'skimage') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_verb_that_fails_to_import_fails_loudly(monkeypatch):
    monkeypatch.setitem(cli.VERBS, "broken", ("fieldforge.apps.no_such_verb", "a verb whose module is missing"))
    with pytest.raises(ModuleNotFoundError, match="fieldforge.apps.no_such_verb"):
        cli.build_parser()


def test_the_registry_table_resolves_every_method_and_refuses_others(monkeypatch):
    from fieldforge.apps.training.methods import registry
    from fieldforge.errors import FieldforgeError

    for name in registry.BUILTIN:
        assert registry.get_method(name).name == name
    assert "resfields-nerf" in registry.field_methods() and "splat" not in registry.field_methods()
    with pytest.raises(FieldforgeError, match="unknown method 'nope'; available: cam, dynamic-splat"):
        registry.get_method("nope")
    monkeypatch.setattr(registry, "_plugins", {"mine": "fieldforge.apps.training.methods.radiance:NGPMethod"})
    with pytest.raises(FieldforgeError, match="is not a Method named 'mine'"):
        registry.get_method("mine")


def test_python_dash_m_runs_the_console_script():
    out = subprocess.run([sys.executable, "-m", "fieldforge", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "bench" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "fieldforge", "no-such-verb"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
