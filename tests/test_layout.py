"""The project's shape, checked: dependencies point one way in csrc/, the
Python package has no import cycle, and no source file outgrows one job."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
PKG = ROOT / "ringreduce"
MAX_LINES = 450

# bindings -> comm -> algo -> ring, ipc, shm -> transport, reduce -> common
LAYERS = {"common": 0, "transport": 1, "reduce": 1, "ring": 2, "ipc": 2, "shm": 2, "algo": 3, "comm": 4,
          "bindings": 5}


def layer_of(path: Path) -> str:
    rel = path.relative_to(CSRC)
    return rel.parts[0] if len(rel.parts) > 1 else "bindings"


def sources(root: Path, exts: tuple) -> list:
    return sorted(p for p in root.rglob("*") if p.suffix in exts and p.is_file())


def test_csrc_includes_point_down_the_layers():
    bad = []
    for f in sources(CSRC, (".h", ".cc", ".cu", ".cuh")):
        mine = layer_of(f)
        for inc in re.findall(r'#include "([a-z_]+)/[^"]+"', f.read_text()):
            if inc in LAYERS and LAYERS[inc] > LAYERS[mine]:
                bad.append(f"{f.relative_to(ROOT)} ({mine}) includes {inc}/")
            if LAYERS.get(inc) == LAYERS[mine] and inc != mine and mine != "bindings":
                bad.append(f"{f.relative_to(ROOT)} ({mine}) includes its sibling layer {inc}/")
    assert not bad, "\n".join(bad)


def python_imports(f: Path) -> set:
    """Modules of the package that `f` imports, at any depth of the file."""
    mod = ".".join(f.relative_to(ROOT).with_suffix("").parts)
    if mod.endswith(".__init__"):
        mod = mod[: -len(".__init__")]
    pkg = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ringreduce"):
                out.add(target)
                for a in node.names:
                    out.add(f"{target}.{a.name}")
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ringreduce")}
    return out


def test_python_package_has_no_import_cycle():
    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
             for f in sources(PKG, (".py",))}
    graph = {m: {t for t in python_imports(f) if t in files and t != m} for m, f in files.items()}
    # A package's __init__ re-exporting its modules is not a cycle back into it.
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state, stack, cycles = {}, [], []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif not state.get(t):
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if not state.get(m):
            visit(m)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("root,exts", [(CSRC, (".h", ".cc", ".cu", ".cuh")), (PKG, (".py",))])
def test_no_source_file_outgrows_one_job(root, exts):
    long = [f"{f.relative_to(ROOT)}: {n} lines" for f in sources(root, exts)
            if (n := len(f.read_text().splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)
