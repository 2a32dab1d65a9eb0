"""No measured number is typed into a chapter's markdown.

A chapter's markdown cells hold the ideas and the math; a sentence that states a measured number (a lesson, a
verdict) is rendered by code from the values the chapter computed (:mod:`metalearn.study.prose`), so a re-run never
leaves it stale. This test reads every notebook's markdown cells, the sources and the executed copies in
``reports/notebooks/``, and fails on a measured-looking number: a decimal (``97.5``), a percentage (``40.8%``) or a
ratio (``4.5×``), outside math (``$…$``) and code (`` `…` ``), that is neither a paper's number
(:mod:`metalearn.study.papers`) nor a setting (a value of the parameter files or of a notebook's parameters cell, or
one of the protocol's constants below).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import astuple
from pathlib import Path

import pytest
import yaml

from metalearn.study import papers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# chapters whose prose is still typed, each with what converts it (strict: the test fails once it passes, so the
# entry must then go)
TYPED: dict[str, str] = {}
SOURCES = [pytest.param(p, id=p.stem, marks=[pytest.mark.xfail(strict=True, reason=TYPED[p.stem])] if p.stem in TYPED
                        else []) for p in NOTEBOOKS]

# a decimal, or a number followed by % or × (a ratio: not "28×28" or "60 × 6", which are sizes and products)
MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:%|×(?!\s?\d))|(?<![\w.])\d+\.\d+(?![\w.]|\s?×\s?\d)")
# what a number that is not a measurement follows: a section (§5.1), a table or figure, a version (torch 2.13)
NOT_MEASURED_AFTER = re.compile(r"(§|\b(?:Table|Tab\.|Fig\.|Figure|Section|Eq\.|torch|Python|version|v))\s?$", re.IGNORECASE)
# the protocol's own numbers: confidence levels and test sizes of the rules every verdict uses (core/stats.py)
PROTOCOL = {"95%", "90%", "5%", "0.5"}


def _numbers(value: object) -> set[str]:
    """Every number in a (nested) setting or paper entry, as the forms prose writes it."""
    if isinstance(value, dict):
        return set().union(*(_numbers(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_numbers(v) for v in value)) if value else set()
    if isinstance(value, str):
        return {m for m in re.findall(r"\d+(?:\.\d+)?", value)}
    if isinstance(value, bool) or not isinstance(value, int | float):
        return set()
    forms = {repr(value), f"{value:g}", str(value)}
    if isinstance(value, float):
        forms |= {f"{value:.{d}f}" for d in range(1, 4)} | {f"{100 * value:g}"}
    return forms


def allowed() -> set[str]:
    """The paper numbers and the settings: what markdown may say."""
    ok = set(PROTOCOL)
    for entry in papers.PAPERS:
        ok |= _numbers(astuple(entry))
    for name in ("params.yaml", "params_paper.yaml"):
        ok |= _numbers(yaml.safe_load((ROOT / name).read_text()))
    for path in NOTEBOOKS:
        params = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
        for node in ast.walk(ast.parse("".join(params["source"]))):
            if isinstance(node, ast.Constant):
                ok |= _numbers(node.value)
    return ok


def measured_numbers(markdown: str, ok: set[str]) -> list[str]:
    """The measured-looking numbers of a markdown cell that are neither papers' nor settings."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$|`[^`]*`", " ", markdown, flags=re.DOTALL)
    found = []
    for match in MEASURED.finditer(text):
        token = match.group(0)
        if NOT_MEASURED_AFTER.search(text[max(0, match.start() - 12):match.start()]):
            continue
        number = re.match(r"\d+(?:\.\d+)?", token).group(0)  # type: ignore[union-attr]
        if token.replace(" ", "") not in ok and number not in ok:
            start = max(0, match.start() - 40)
            found.append(f"{token!r} in …{text[start:match.end() + 20].strip()}…".replace("\n", " "))
    return found


def _markdown(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]


def test_the_detector_tells_measured_numbers_from_settings_and_papers():
    ok = {"98.8", "0.001", "95%"}
    text = ("ProtoNet reaches 97.5 ± 0.4 (the paper: 98.8) at lr 0.001, a 4.5× speed-up, 40.8% on validation, "
            "95% CIs, 28×28 images, 60 × 6 images, $0.37$ in math and `0.25` in code, Table 2, 2017, §5.2, torch 2.13.")
    assert [f.split()[0] for f in measured_numbers(text, ok)] == ["'97.5'", "'0.4'", "'4.5×'", "'40.8%'"]
    assert "98.8" in allowed() and "0.001" in allowed()  # a paper number (Snell et al.) and a setting (lr)


@pytest.mark.parametrize("path", SOURCES)
def test_no_measured_number_in_a_chapters_markdown(path):
    ok = allowed()
    found = {i: hits for i, cell in enumerate(_markdown(path)) if (hits := measured_numbers(cell, ok))}
    assert not found, (f"{path.name}: measured numbers typed into markdown (render them from the values the chapter "
                       f"computes, metalearn.study.prose.show): {found}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_measured_number_in_an_executed_chapters_markdown(path):
    executed = ROOT / "reports" / "notebooks" / path.name
    if not executed.exists():
        pytest.skip(f"{executed.relative_to(ROOT)} is not there yet (dvc repro {path.stem})")
    if _markdown(executed) != _markdown(path):
        pytest.skip(f"{executed.relative_to(ROOT)} predates the chapter's markdown; its stage re-runs it "
                    f"(dvc repro {path.stem})")
    ok = allowed()
    found = {i: hits for i, cell in enumerate(_markdown(executed)) if (hits := measured_numbers(cell, ok))}
    assert not found, f"{executed.name}: measured numbers in markdown: {found}"
