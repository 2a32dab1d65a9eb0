"""The published numbers as data (``metalearn.study.papers``): every entry names a row the committed results table has, no
two entries share a key, values lie in their metric's range, and a plain method id gets the transductive paper
number marked not comparable."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from metalearn.core.results import INT_COLUMNS, METRICS, PERCENT_METRICS
from metalearn.study import papers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results_table() -> pd.DataFrame:
    return pd.read_csv(ROOT / "reports" / "results.csv", dtype={c: "Int64" for c in INT_COLUMNS})


def _same(column: pd.Series, value: object) -> pd.Series:
    return column.isna() if value is None else column == value


def test_every_entry_names_a_row_of_the_results_table(results_table):
    for p in papers.PAPERS:
        t = results_table
        match = t[(t.notebook == p.notebook) & (t.method == p.method) & (t.dataset == p.dataset)
                  & _same(t.ways, p.ways) & _same(t.shots, p.shots) & (t.metric == p.metric)
                  & _same(t.instance, p.instance) & _same(t.adapt_steps, p.adapt_steps)
                  & t.trained_on.isna() & t.variant.isna()]
        assert len(match) == 1, f"{p.key}: {len(match)} rows in reports/results.csv"


def test_keys_are_unique_and_described():
    keys = [p.key for p in papers.PAPERS]
    assert len(keys) == len(set(keys)), "two published numbers share a key"
    for p in papers.PAPERS:
        assert p.source and p.protocol, p.key
        assert p.metric in METRICS, p.key


def test_values_lie_in_their_metric_range():
    for p in papers.PAPERS:
        if p.metric in PERCENT_METRICS:
            assert 0 <= p.value <= 100, p.key
        elif p.metric == "delta_auprc":
            assert -1 <= p.value <= 1, p.key
        else:
            assert p.value >= 0, p.key
    # a few numbers as the chapters print them
    assert papers.lookup("protonet", "omniglot", 5, 1, notebook="04_prototypical_networks").value == 98.8
    assert papers.lookup("mann", "omniglot", 5, None, "instance_accuracy", instance=2).value == 82.8
    assert papers.lookup("random_forest", "fsmol", None, 16, "delta_auprc").comparable


def test_the_six_settings_have_their_references():
    covered = {(p.dataset, p.ways, p.shots) for p in papers.PAPERS if p.metric == "accuracy"}
    assert set(papers.SETTINGS) <= covered


def test_plain_rows_get_the_transductive_number_as_not_comparable():
    maml = papers.reference_for("maml", "omniglot", 5, 1)
    assert maml is not None and maml.value == 98.7 and not maml.comparable and maml.method == "maml"
    assert papers.lookup("maml_transductive", "omniglot", 5, 1).comparable
    reptile = papers.reference_for("reptile", "omniglot", 20, 5)  # Nichol et al. report both protocols
    assert reptile.value == 96.65 and reptile.comparable
    assert papers.reference_for("hypernet", "omniglot", 5, 1) is None  # no paper has few-shot hypernetworks
    assert not papers.reference_for("meta_gnn", "cifar_fs", 5, 1).comparable  # a wider encoder


def test_catalogued_methods_have_main_rows(results_table):
    t = results_table
    plain = t[(t.metric == "accuracy") & t[["variant", "trained_on", "adapt_steps", "meta_batch", "inner_steps",
                                            "instance"]].isna().all(axis=1)]
    for method, m in papers.METHODS.items():
        assert m.family in papers.FAMILIES, method
        assert papers.family_of(method) == m.family
        rows = plain[(plain.notebook == m.notebook) & (plain.method == method)]
        assert len(rows), f"{method}: no accuracy rows in {m.notebook}"
    with pytest.raises(KeyError, match="not in papers.METHODS"):
        papers.family_of("maml_transductive")


def test_paper_table():
    table = papers.paper_table()
    assert len(table) == len(papers.PAPERS)
    assert str(table.ways.dtype) == "Int64" and table.comparable.dtype == bool
    assert not table.duplicated(["notebook", "method", "dataset", "ways", "shots", "metric", "instance",
                                 "adapt_steps"]).any()


def test_notebooks_read_paper_numbers_from_papers_py():
    """No notebook types a published number: each reads them from :mod:`metalearn.study.papers`."""
    import ast
    import json
    from pathlib import Path

    values = {p.value for p in papers.PAPERS}
    for nb in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            typed = [n.value for n in ast.walk(ast.parse("".join(cell["source"])))
                     if isinstance(n, ast.Constant) and isinstance(n.value, float) and n.value in values]
            assert not typed, f"{nb.name} types the published numbers {typed}: read them with papers.lookup"
