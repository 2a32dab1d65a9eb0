"""The library's own import graph, read from its source: which ``metalearn`` modules a module imports (at the top or
inside a function), the closure of those imports, and the hash of that closure's source.

A trained model is keyed by the source of the modules its fit imports (:mod:`metalearn.model_store`), a DVC stage
depends on the modules its notebook imports (``dvc.yaml``), and the graph must have no circles (the floors of the
library: files, data, episodes, models and the trainer at the bottom; methods above; notebook glue on top). The
source is read once per process (a snapshot at first use), so a key describes the code the process runs even if a
file is edited while a long run goes on.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

LIB = Path(__file__).resolve().parent
PACKAGE = "metalearn"


@cache
def _snapshot(lib: Path) -> dict[str, bytes]:
    """The source of every module of the library folder ``lib``, read once per process."""
    return {p.stem: p.read_bytes() for p in sorted(lib.glob("*.py")) if p.stem != "__init__"}


def _source(module: str) -> bytes:
    """``"maml"`` or ``"metalearn.maml"`` -> the module's source (``ValueError`` if there is none)."""
    sources = _snapshot(LIB)
    name = module.removeprefix(f"{PACKAGE}.")
    if name not in sources:
        raise ValueError(f"{module!r} is not a module of {PACKAGE}; modules: {', '.join(sorted(sources))}")
    return sources[name]


def _imported(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .maml import x
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import anil, fast_maml
                found.update(a.name for a in node.names)
            elif node.level == 0 and node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith(f"{PACKAGE}.") and a.name.count(".") >= 1)
    return {m for m in found if m in _snapshot(LIB)}


@cache
def _imports_of(lib: Path, module: str) -> frozenset[str]:
    return frozenset(m for m in _imported(ast.parse(_source(module))) if m in _snapshot(lib))


def imports(module: str) -> set[str]:
    """The ``metalearn`` modules that ``module`` imports directly (short names, e.g. ``{"train", "models"}``)."""
    _source(module)  # a clear error for a name that is not a module
    return set(_imports_of(LIB, module.removeprefix(f"{PACKAGE}.")))


def code_imports(code: str) -> set[str]:
    """The ``metalearn`` modules imported by a piece of code (e.g. a notebook's cells)."""
    return _imported(ast.parse(code))


def closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every ``metalearn`` module they import, directly or not (sorted short names)."""
    todo = [m.removeprefix(f"{PACKAGE}.") for m in modules]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(imports(m) - seen)
    return sorted(seen)


def cycles() -> list[list[str]]:
    """Every import circle of the library, each as the list of modules around it (empty: none)."""
    graph = {m: imports(m) for m in _snapshot(LIB)}
    found, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def source_hashes(modules: Iterable[str]) -> dict[str, str]:
    """``{"maml.py": sha256 of its source, ...}`` for ``modules`` (short names)."""
    return {f"{m}.py": hashlib.sha256(_source(m)).hexdigest() for m in sorted(modules)}
