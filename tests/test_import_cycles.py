"""No import cycles among the modules of kpatch_core/ and arch/ (installed as kpatch_arch).

The same analysis as /work/shared/tools/import_cycles.py (copied: shared/ is not part of the
project): every module-level and function-level import (``if TYPE_CHECKING:`` blocks excluded)
is an edge to the module it names; a strongly connected component of more than one module is a
cycle.  A package importing its own submodule is an edge like any other.
"""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"kpatch_core": "kpatch_core", "arch": "kpatch_arch"}  # directory -> import name


def _modules() -> dict[str, tuple[Path, bool]]:
    mods: dict[str, tuple[Path, bool]] = {}
    for top, name in PACKAGES.items():
        for d, _, files in os.walk(ROOT / top):
            for f in files:
                if not f.endswith(".py"):
                    continue
                p = Path(d) / f
                parts = [name, *p.relative_to(ROOT / top).with_suffix("").parts]
                is_pkg = parts[-1] == "__init__"
                if is_pkg:
                    parts = parts[:-1]
                mods[".".join(parts)] = (p, is_pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                skip.update(id(s) for s in ast.walk(n))
        pkg = m if is_pkg else m.rpartition(".")[0]
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            names: list[str] = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    b = pkg.split(".")
                    b = b[: len(b) - (n.level - 1)] if n.level > 1 else b
                    base = ".".join(b + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in n.names]
            for t in names:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_detector_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "kpatch_core.probe" in graph and "kpatch_arch.base" in graph
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
