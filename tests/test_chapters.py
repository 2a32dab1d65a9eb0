"""The one table of chapters (:mod:`metalearn.study.chapters`) against the notebooks, dvc.yaml, the results and the
papers: dvc.yaml's library dependencies are generated from it, and editing a method module re-runs only the chapters
that train or score that method."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from metalearn.core import source
from metalearn.study import chapters, papers
from metalearn.study.chapters import CHAPTERS, OTHER_STAGES

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _lib_deps(stage: str) -> set[str]:
    return {d for d in DVC[stage]["deps"] if isinstance(d, str) and d.startswith("lib/")}


def test_the_table_is_the_notebooks_and_the_stages():
    assert [c.notebook for c in CHAPTERS] == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert set(DVC) == {c.stage for c in CHAPTERS} | set(OTHER_STAGES)
    assert all(c.family in chapters.FAMILIES for c in CHAPTERS)
    assert all(list(c.methods) == sorted(c.methods) for c in CHAPTERS)
    with pytest.raises(KeyError, match="no chapter '04_protonet'; the chapters are 00_background"):
        chapters.chapter("04_protonet")


def test_dvc_yaml_library_deps_are_generated_not_typed():
    text = (ROOT / "dvc.yaml").read_text()
    assert chapters.write_dvc_deps(text) == text, "stale: run python -m metalearn.study.chapters"
    for stage in DVC:
        assert _lib_deps(stage) == set(chapters.dvc_deps(stage)), stage


def test_the_generator_replaces_only_library_lines():
    text = ("stages:\n  data:\n    cmd: x\n    deps:\n      # a comment\n      - data/manifest.json\n"
            "      - lib/metalearn/old_module.py\n      - lib/metalearn/core/gone.py\n    outs:\n      - a\n")
    new = chapters.write_dvc_deps(text)
    assert "old_module" not in new and "gone.py" not in new and "# a comment" in new and "      - a\n" in new
    assert [line.strip()[2:] for line in new.splitlines() if "lib/metalearn" in line] == chapters.dvc_deps("data")


@pytest.mark.parametrize("ch", CHAPTERS, ids=lambda c: c.notebook)
def test_a_chapter_reaches_exactly_the_methods_it_declares(ch: chapters.Chapter) -> None:
    reached = set(chapters.lib_modules(ch.stage)) & chapters.method_modules()
    assert reached == set(ch.methods), f"{ch.notebook} reaches {sorted(reached)}, declares {list(ch.methods)}"


@pytest.mark.parametrize("module", sorted(chapters.method_modules()))
def test_editing_a_method_reruns_only_its_chapters(module: str) -> None:
    """The stages whose dependencies hold a method's file are the chapters that train or score the method."""
    path = f"lib/metalearn/{source.path_of(module)}"
    rerun = {stage for stage in DVC if path in _lib_deps(stage)}
    assert rerun == {c.stage for c in CHAPTERS if module in c.methods}, module


def test_headline_methods_are_in_the_results_and_the_papers_catalogue():
    results = pd.read_csv(ROOT / "reports/results.csv")
    for ch in CHAPTERS:
        rows = results[results["notebook"] == ch.notebook]
        if ch.method is None:
            assert rows.empty, ch.notebook
            continue
        assert ((rows["method"] == ch.method) & (rows["metric"] == ch.metric)).any(), ch.notebook
        assert set(rows["dataset"]) <= set(ch.datasets), ch.notebook
        if ch.family != "drug discovery":
            assert papers.METHODS[ch.method].family == ch.family, ch.notebook
            assert papers.METHODS[ch.method].notebook == ch.notebook, ch.notebook
