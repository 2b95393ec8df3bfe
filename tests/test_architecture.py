"""The layering the README describes, enforced: import-linter's contracts in pyproject.toml
(kernels < scenes < encoders < fields < render < apps; fields and scenes never import render or
apps) and no import cycle among modules at import time (imports inside functions excluded)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fieldforge

PACKAGE = Path(fieldforge.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_time_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """fieldforge modules imported when ``path`` is imported: statements at module level and in
    class bodies (executed on import), not in function bodies; ``from X import y`` counts X.y
    when that is a module, else X."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
            visit([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules and m != name}


def test_import_linter_contracts_are_kept():
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0 and "0 broken" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_no_import_cycles_at_import_time():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {m: _import_time_imports(p, m, modules) for m, p in files.items()}
    for m in modules:  # importing a.b imports package a first
        if "." in m:
            graph[m].add(m.rpartition(".")[0])
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    # a package's __init__ importing its own submodules is not a cycle of the code's design
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not real, real
