"""The library's own import graph, read from its source: which ``metalearn`` modules a module imports (at the top or
inside a function), the closure of those imports, and the hash of that closure's source.

A trained model is keyed by the source of the modules its fit imports (:mod:`metalearn.core.model_store`), a DVC stage
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

LIB = Path(__file__).resolve().parents[1]
PACKAGE = "metalearn"


@cache
def _snapshot(lib: Path) -> dict[str, bytes]:
    """The source of every module of the library folder ``lib`` by dotted name (``"gradient.maml"``; a package's
    ``__init__`` by the package's name, ``"gradient"``), read once per process."""
    out = {}
    for p in sorted(lib.rglob("*.py")):
        parts = p.relative_to(lib).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:  # the top-level __init__ holds only the map of the library
            out[name] = p.read_bytes()
    return out


def modules() -> list[str]:
    """Every module of the library by dotted name, packages' ``__init__`` included (sorted)."""
    return sorted(_snapshot(LIB))


def path_of(module: str) -> str:
    """``"gradient.maml"`` -> ``"gradient/maml.py"``, ``"gradient"`` -> ``"gradient/__init__.py"`` (relative to the
    library folder)."""
    name = module.removeprefix(f"{PACKAGE}.")
    _source(name)
    folder = LIB / name.replace(".", "/")
    return f"{name.replace('.', '/')}/__init__.py" if folder.is_dir() else f"{name.replace('.', '/')}.py"


def _source(module: str) -> bytes:
    """``"gradient.maml"`` or ``"metalearn.gradient.maml"`` -> the module's source (``ValueError`` if there is
    none)."""
    sources = _snapshot(LIB)
    name = module.removeprefix(f"{PACKAGE}.")
    if name not in sources:
        raise ValueError(f"{module!r} is not a module of {PACKAGE}; modules: {', '.join(sorted(sources))}")
    return sources[name]


def _resolve(dotted: str, names: Iterable[str]) -> set[str]:
    """What ``from metalearn.<dotted> import <names>`` reaches: each name that is itself a module
    (``from metalearn.core import episodes``), else the module ``dotted`` (``from metalearn.core.episodes import
    X``)."""
    known = _snapshot(LIB)
    found = set()
    for n in names:
        sub = f"{dotted}.{n}" if dotted else n
        if sub in known:
            found.add(sub)
        elif dotted in known:
            found.add(dotted)
    return found


def _imported(tree: ast.AST, package: str = "") -> set[str]:
    """The library modules imported by ``tree`` (the code of a module of ``package``, for relative imports)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .maml import x, from .. import core
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                dotted = ".".join([*base, *(node.module.split(".") if node.module else [])])
                found |= _resolve(dotted, [a.name for a in node.names])
            elif node.module and node.module.split(".")[0] == PACKAGE:
                found |= _resolve(node.module.removeprefix(PACKAGE).lstrip("."), [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(f"{PACKAGE}."):
                    found.add(a.name.removeprefix(f"{PACKAGE}."))
    return {m for m in found if m in _snapshot(LIB)}


@cache
def _imports_of(lib: Path, module: str) -> frozenset[str]:
    package = module if (lib / module.replace(".", "/")).is_dir() else module.rpartition(".")[0]
    return frozenset(m for m in _imported(ast.parse(_source(module)), package) if m in _snapshot(lib) and m != module)


def imports(module: str) -> set[str]:
    """The ``metalearn`` modules that ``module`` imports directly (dotted names, e.g. ``{"core.train",
    "core.models"}``)."""
    _source(module)  # a clear error for a name that is not a module
    return set(_imports_of(LIB, module.removeprefix(f"{PACKAGE}.")))


def code_imports(code: str) -> set[str]:
    """The ``metalearn`` modules imported by a piece of code (e.g. a notebook's cells)."""
    return _imported(ast.parse(code))


def closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every ``metalearn`` module they import, directly or not (sorted dotted names)."""
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
    """``{"gradient/maml.py": sha256 of its source, ...}`` for ``modules`` (dotted names)."""
    return {path_of(m): hashlib.sha256(_source(m)).hexdigest() for m in sorted(modules)}
