"""Results schema: validated rows, atomic metrics files, the tidy table, and the committed reports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from metalearn import results

ROOT = Path(__file__).resolve().parents[1]


def _row(**kw):
    args = dict(notebook="nb", method="protonet", dataset="omniglot", ways=5, shots=1, metric="accuracy",
                value=98.0, ci95=0.3, n_test=600, scale="study", device="cpu", seed=0)
    args.update(kw)
    return results.row(**args)


@pytest.mark.parametrize("kw, message", [(dict(metric="acc"), "unknown metric"), (dict(dataset="mnist"), "unknown dataset"),
                                         (dict(value=0.98 * 1000), "percentage"), (dict(scale="big"), "unknown scale"),
                                         (dict(value=float("nan")), "finite"), (dict(ci95=-1.0), "ci95"),
                                         (dict(n_test=100), ">= 600 test episodes")])
def test_row_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        _row(**kw)


def test_metrics_and_collect(tmp_path):
    results.write_metrics("nb", [_row(), _row(shots=5, value=99.5)], tmp_path)
    results.write_metrics("other", [_row(notebook="other", metric="episodes_per_s", value=1e4)], tmp_path)
    table = results.collect(tmp_path / "metrics", tmp_path / "results.csv")
    assert list(table.columns) == results.COLUMNS and len(table) == 3
    assert pd.read_csv(tmp_path / "results.csv").shape == (3, len(results.COLUMNS))
    with pytest.raises(ValueError, match="notebook='x'"):
        results.write_metrics("x", [_row()], tmp_path)
    with pytest.raises(FileNotFoundError, match="no metrics files"):
        results.collect(tmp_path / "nothing", tmp_path / "r.csv")


def test_committed_results_table():
    """The committed study table holds the baseline rows with 95% CIs over >= 600 test episodes."""
    table = pd.read_csv(ROOT / "reports/results.csv")
    assert list(table.columns) == results.COLUMNS
    acc = table[(table.notebook == "00_background") & (table.metric == "accuracy")]
    settings = {(d, w, s) for d, w, s in zip(acc.dataset, acc.ways, acc.shots, strict=True)}
    assert settings == {("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5),
                        ("cifar_fs", 5, 1), ("cifar_fs", 5, 5)}
    assert set(acc.method) == {"pretrain_finetune", "nearest_centroid"}
    assert (acc.n_test >= 600).all() and (acc.ci95 > 0).all() and (acc.scale == "study").all()
    bench = table[table.metric == "episodes_per_s"].set_index("method")["value"]
    assert {"lib_sampler", "torchmeta_loader"} <= set(bench.index)
