"""Results schema: validated rows, the three files per notebook (rows, numbers-only metrics, curves), the tidy table,
the accuracy-vs-shots tables, and the committed reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metalearn.core import results

ROOT = Path(__file__).resolve().parents[1]
CURVES = pd.DataFrame({"step": [0, 1, 0], "loss": [2.0, 1.5, 1.0], "accuracy": [20.0, 40.0, 60.0],
                       "model": ["a", "a", "b"], "dataset": "omniglot"})


def _row(**kw) -> dict:
    args = dict(notebook="nb", method="protonet", dataset="omniglot", ways=5, shots=1, metric="accuracy",
                value=98.0, ci95=0.3, n_test=600, scale="study", device="cpu", seed=0)
    args.update(kw)
    return results.row(**args)


@pytest.mark.parametrize("kw, message", [(dict(metric="acc"), "unknown metric"), (dict(dataset="mnist"), "unknown dataset"),
                                         (dict(value=0.98 * 1000), "percentage"), (dict(scale="big"), "unknown scale"),
                                         (dict(value=float("nan")), "finite"), (dict(ci95=-1.0), "ci95"),
                                         (dict(n_test=100), ">= 600 test episodes"),
                                         (dict(method="maml[5 steps]"), "plain identifier"),
                                         (dict(method="maml:lib batched"), "plain identifier"),
                                         (dict(method="siamese@omniglot"), "plain identifier"),
                                         (dict(method="Maml"), "plain identifier"),
                                         (dict(variant="lib batched"), "unknown variant"),
                                         (dict(trained_on="omniglot"), "task shift"),
                                         (dict(inner_steps=-1), "inner_steps must be >= 0")])
def test_row_refuses_bad_values(kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        _row(**kw)


@pytest.mark.parametrize("kw, message", [(dict(ways=5.0), "ways must be an int"), (dict(shots="1"), "shots must be an int"),
                                         (dict(meta_batch=True), "meta_batch must be an int"),
                                         (dict(adapt_steps=2.5), "adapt_steps must be an int"),
                                         (dict(value="98"), "value must be a number"),
                                         (dict(train_seconds="12 s"), "train_seconds must be a number"),
                                         (dict(seed=None), "seed must be an int")])
def test_row_refuses_wrong_types(kw, message) -> None:
    with pytest.raises(TypeError, match=message):
        _row(**kw)


def test_row_keeps_settings_in_columns() -> None:
    r = _row(method="maml", variant="lib_batched", metric="seconds_per_step", value=np.float64(0.2), ci95=None,
             n_test=None, meta_batch=np.int64(32), inner_steps=5)
    assert list(r) == results.COLUMNS
    assert (r["method"], r["variant"], r["meta_batch"], r["inner_steps"]) == ("maml", "lib_batched", 32, 5)
    assert type(r["meta_batch"]) is int and type(r["value"]) is float


def test_metrics_tree_nests_numbers_only() -> None:
    rows = [_row(), _row(method="protonet", trained_on="cifar_fs", value=40.0),
            _row(method="maml", variant="lib", metric="seconds_per_step", value=0.2, ci95=None, meta_batch=4,
                 inner_steps=1),
            _row(dataset="sinusoid", ways=None, shots=5, method="maml", metric="mse", value=0.4, adapt_steps=10)]
    tree = results.metrics_tree(rows)
    assert tree == {"omniglot": {"5w1s": {"protonet": {"accuracy": 98.0, "accuracy_ci95": 0.3,
                                                       "trained_on_cifar_fs": {"accuracy": 40.0, "accuracy_ci95": 0.3}},
                                          "maml": {"lib": {"meta_batch_4": {"inner_steps_1": {"seconds_per_step": 0.2}}}}}},
                    "sinusoid": {"5shot": {"maml": {"adapt_steps_10": {"mse": 0.4, "mse_ci95": 0.3}}}}}
    assert results.setting_key(None, None) == "all" and results.setting_key(20, None) == "20way"
    with pytest.raises(ValueError, match="two rows for omniglot/protonet/accuracy"):
        results.metrics_tree([_row(), _row(value=97.0)])
    # several training seeds of one model: a seed level below it, and only there
    seeds = results.metrics_tree([_row(value=97.0 + s, seed=s, train_steps=100, train_examples=8000) for s in range(3)]
                                 + [_row(shots=5, seed=1), _row(method="maml", budget=48000, value=90.0)])
    assert seeds["omniglot"]["5w1s"]["protonet"] == {f"seed_{s}": {"accuracy": 97.0 + s, "accuracy_ci95": 0.3}
                                                     for s in range(3)}
    assert seeds["omniglot"]["5w5s"]["protonet"] == {"accuracy": 98.0, "accuracy_ci95": 0.3}
    assert seeds["omniglot"]["5w1s"]["maml"] == {"budget_48000": {"accuracy": 90.0, "accuracy_ci95": 0.3}}


def test_budget_columns_and_rows_files_written_before_them(tmp_path) -> None:
    r = _row(train_seconds=12.5, train_steps=100, train_examples=8000)
    assert (r["train_steps"], r["train_examples"], r["budget"]) == (100, 8000, None)
    with pytest.raises(ValueError, match="train_examples must be >= 0"):
        _row(train_examples=-1)
    with pytest.raises(TypeError, match="train_steps must be an int"):
        _row(train_steps=1.5)
    path = results.write_metrics("nb", [r], tmp_path, curves=CURVES)[0]
    old = pd.read_csv(path).drop(columns=["budget", "train_steps", "train_examples"])
    old.to_csv(path, index=False)  # a rows file from before the budget columns: they read as <NA>
    back = results.read_rows(path)
    assert list(back.columns) == results.COLUMNS and back.train_steps.isna().all() and back.value[0] == 98.0
    old.drop(columns=["train_seconds"]).to_csv(path, index=False)  # but a required column is never optional
    with pytest.raises(ValueError, match="do not follow the results schema"):
        results.read_rows(path)


def test_episodes_files_carry_training_seeds_and_pair_only_like_draws(tmp_path) -> None:
    acc = {("protonet", "omniglot", 5, 1, s): np.array([90.0, 80.0, 70.0]) + s for s in (0, 1, 2)}
    path = results.write_episodes("04_p", acc, tmp_path, episode_seed=0, queries=15, data={"omniglot": "abc"})
    table = pd.read_csv(path)
    assert list(table.columns) == results.EPISODE_COLUMNS and len(table) == 9 and set(table.metric) == {"accuracy"}
    drawn = dict(episode_seed=0, queries=15, data="abc")
    for s in (0, 1, 2):
        got = results.read_episodes(path, "protonet", "omniglot", 5, 1, seed=s, **drawn)
        assert got.tolist() == [90.0 + s, 80.0 + s, 70.0 + s]
    with pytest.raises(ValueError, match="training seed 3"):
        results.read_episodes(path, "protonet", "omniglot", 5, 1, seed=3, **drawn)
    for change, message in ((dict(episode_seed=1), "episode_seed 0 vs ours 1"), (dict(queries=5), "queries 15 vs"),
                            (dict(data="xyz"), "data 'abc' vs ours 'xyz'"), (dict(metric="roc_auc"), "metric")):
        with pytest.raises(ValueError, match=message):
            results.read_episodes(path, "protonet", "omniglot", 5, 1, seed=0, **(drawn | change))
    # per-assay units of the molecule sets: no ways, no queries, one metric per data set
    assays = {("maml", "tox21", 2, 10, 0): [0.7, 0.8], ("maml", "fsmol", None, 16, 0): [0.1, 0.2, 0.3]}
    path = results.write_episodes("13_d", assays, tmp_path, episode_seed=0, queries=None,
                                  data={"tox21": "t", "fsmol": "f"}, metric={"tox21": "roc_auc", "fsmol": "delta_auprc"})
    got = results.read_episodes(path, "maml", "fsmol", None, 16, seed=0, episode_seed=0, queries=None, data="f",
                                metric="delta_auprc")
    assert got.tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="queries None vs ours 15"):
        results.read_episodes(path, "maml", "tox21", 2, 10, seed=0, episode_seed=0, queries=15, data="t",
                              metric="roc_auc")
    with pytest.raises(ValueError, match="not an episodes file"):
        pd.read_csv(path).drop(columns="metric").to_csv(path, index=False)
        results.read_episodes(path, "maml", "tox21", 2, 10, seed=0, episode_seed=0, queries=None, data="t")


def test_episodes_files_tell_a_runs_checkpoints_at_each_budget_apart(tmp_path) -> None:
    """A checkpoint's units (a sixth key item: its budget) are read by budget; the model trained to its end has
    none; a file written before the budget column reads as having none."""
    units = {("protonet", "cifar_fs", 5, 1, 0): [50.0, 60.0], ("protonet", "cifar_fs", 5, 1, 0, 100): [40.0, 45.0],
             ("protonet", "cifar_fs", 5, 1, 0, 600): [48.0, 58.0]}
    path = results.write_episodes("04_p", units, tmp_path, episode_seed=0, queries=15, data={"cifar_fs": "c"})
    drawn = dict(seed=0, episode_seed=0, queries=15, data="c")
    assert results.read_episodes(path, "protonet", "cifar_fs", 5, 1, **drawn).tolist() == [50.0, 60.0]
    for budget in (100, 600):
        got = results.read_episodes(path, "protonet", "cifar_fs", 5, 1, budget=budget, **drawn)
        assert got.tolist() == units[("protonet", "cifar_fs", 5, 1, 0, budget)]
    with pytest.raises(ValueError, match="budget 300"):
        results.read_episodes(path, "protonet", "cifar_fs", 5, 1, budget=300, **drawn)
    old = pd.read_csv(path)
    old[old.budget.isna()].drop(columns="budget").to_csv(path, index=False)
    assert results.read_episodes(path, "protonet", "cifar_fs", 5, 1, **drawn).tolist() == [50.0, 60.0]


def test_write_read_round_trip_and_collect(tmp_path) -> None:
    rows = [_row(), _row(shots=5, value=99.5, train_seconds=12.5),
            _row(method="maml", variant="torchmeta", metric="seconds_per_step", value=0.3, ci95=None, n_test=None,
                 meta_batch=32, inner_steps=5)]
    paths = results.write_metrics("nb", rows, tmp_path, curves=CURVES)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["rows/nb.csv", "metrics/nb.json", "curves/nb.csv",
                                                                   "curves/nb_validation.csv"]
    assert paths[0].read_text().splitlines()[1].startswith("nb,protonet,,,omniglot,5,1,,,,,,accuracy,98.0,0.3,600,")
    back = results.read_rows(paths[0])
    assert list(back.columns) == results.COLUMNS
    assert back.astype(object).where(back.notna(), None).to_dict("records") == rows
    assert all(back[c].dtype == "Int64" for c in results.INT_COLUMNS)
    metrics = json.loads(paths[1].read_text())
    assert metrics["omniglot"]["5w5s"]["protonet"] == {"accuracy": 99.5, "accuracy_ci95": 0.3}
    assert "seconds" not in metrics
    timed = results.write_metrics("nb", rows, tmp_path / "t", curves=CURVES,
                                  seconds={"training": 100.04, "evaluation": 12.0})
    assert json.loads(timed[1].read_text())["seconds"] == {"training": 100.0, "evaluation": 12.0}
    with pytest.raises(ValueError, match="training and evaluation"):
        results.write_metrics("nb", rows, tmp_path / "u", curves=CURVES, seconds={"train": 1.0})
    curves = pd.read_csv(paths[2])
    assert list(curves.columns) == ["series", "step", "loss", "accuracy"] and list(curves.series) == ["a", "a", "b"]
    assert list(pd.read_csv(paths[3]).columns) == results.VALIDATION_COLUMNS  # no checks: the header only

    # a selected model's curve: training rows and validation checks, apart
    checked = pd.DataFrame({"model": "c", "step": [10, 20, 20], "seconds": [1.0, 2.0, 2.0],
                            "loss": [1.0, 0.5, float("nan")], "val_accuracy": [float("nan"), float("nan"), 61.5]})
    paths = results.write_metrics("nb", rows, tmp_path, curves=checked)
    assert pd.read_csv(paths[2]).to_dict("list") == {"series": ["c", "c"], "step": [10, 20], "seconds": [1.0, 2.0],
                                                     "loss": [1.0, 0.5]}
    assert pd.read_csv(paths[3]).to_dict("records") == [{"series": "c", "step": 20, "seconds": 2.0,
                                                         "val_accuracy": 61.5}]

    results.write_metrics("other", [_row(notebook="other", metric="episodes_per_s", value=1e4, ci95=None)], tmp_path,
                          curves=CURVES.drop(columns="accuracy"))
    table = results.collect(tmp_path / "rows", tmp_path / "results.csv")
    assert list(table.columns) == results.COLUMNS and len(table) == 4
    assert pd.read_csv(tmp_path / "results.csv").shape == (4, len(results.COLUMNS))
    with pytest.raises(ValueError, match="notebook='x'"):
        results.write_metrics("x", [_row()], tmp_path, curves=CURVES)
    with pytest.raises(ValueError, match="curves need"):
        results.write_metrics("nb", rows, tmp_path, curves=CURVES.drop(columns="model"))
    with pytest.raises(TypeError):  # not a row of the schema
        results.write_metrics("nb", [{"notebook": "nb", "method": "protonet"}], tmp_path, curves=CURVES)
    (tmp_path / "rows" / "nb.csv").write_text("notebook,method\nnb,protonet\n")
    with pytest.raises(ValueError, match="do not follow the results schema"):
        results.collect(tmp_path / "rows", tmp_path / "results.csv")
    with pytest.raises(FileNotFoundError, match="no rows files"):
        results.collect(tmp_path / "nothing", tmp_path / "r.csv")


def test_accuracy_vs_shots_and_main(tmp_path) -> None:
    rows = [_row(notebook="04_p", shots=1, value=98.0), _row(notebook="04_p", shots=5, value=99.0),
            _row(notebook="04_p", shots=5, value=60.0, trained_on="cifar_fs"),
            _row(notebook="04_p", method="protonet_train_5way", value=97.0),
            _row(notebook="04_p", dataset="cifar_fs", shots=1, value=50.0),
            _row(notebook="04_p", dataset="cifar_fs", shots=5, value=70.0)]
    results.write_metrics("04_p", rows, tmp_path, curves=CURVES)
    results.main(["--rows-dir", str(tmp_path / "rows"), "--out", str(tmp_path / "results.csv"),
                  "--plots-dir", str(tmp_path / "plots")])
    panels = {p.name: pd.read_csv(p) for p in sorted((tmp_path / "plots").glob("*.csv"))}
    assert list(panels) == ["accuracy_vs_shots_cifar_fs_5way.csv", "accuracy_vs_shots_omniglot_5way.csv"]
    omniglot = panels["accuracy_vs_shots_omniglot_5way.csv"]
    assert omniglot.to_dict("list") == {"series": ["protonet (04)"] * 2, "shots": [1, 5], "accuracy": [98.0, 99.0],
                                        "ci95": [0.3, 0.3]}


def test_committed_results_table():
    """The committed study table holds the baseline rows with 95% CIs over >= 600 test episodes."""
    table = pd.read_csv(ROOT / "reports/results.csv")
    if list(table.columns) != results.COLUMNS:
        pytest.skip("reports/results.csv predates the current results schema; the next study run (dvc repro) "
                    "regenerates it")
    acc = table[(table.notebook == "00_background") & (table.metric == "accuracy")]
    settings = {(d, w, s) for d, w, s in zip(acc.dataset, acc.ways, acc.shots, strict=True)}
    assert settings == {("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5),
                        ("cifar_fs", 5, 1), ("cifar_fs", 5, 5)}
    assert set(acc.method) == {"pretrain_finetune", "nearest_centroid"}
    assert (acc.n_test >= 600).all() and (acc.ci95 > 0).all() and (acc.scale == "study").all()
    bench = table[table.metric == "episodes_per_s"].set_index("method")["value"]
    assert {"lib_sampler", "torchmeta_loader"} <= set(bench.index)


def test_instance_rows_carry_the_presentation_in_their_own_column() -> None:
    """Santoro et al.'s per-instance accuracies: metric instance_accuracy with the instance number, which tells the
    rows apart in the metrics tree; an instance on any other metric, or none on this one, is refused."""
    rows = [results.row("06_mann", "mann", "omniglot", 5, None, "instance_accuracy", v, 1.0, 1000, instance=n,
                        scale="study", device="cpu", seed=0) for n, v in ((1, 36.0), (2, 80.5))]
    assert [r["instance"] for r in rows] == [1, 2] and rows[0]["shots"] is None
    tree = results.metrics_tree(rows)
    assert tree["omniglot"]["5way"]["mann"]["instance_2"]["instance_accuracy"] == 80.5
    for bad in (dict(metric="instance_accuracy"), dict(metric="accuracy", instance=2),
                dict(metric="instance_accuracy", instance=0)):
        kw = dict(metric="accuracy", instance=None) | bad
        with pytest.raises(ValueError, match="instance"):
            results.row("06_mann", "mann", "omniglot", 5, 1, kw["metric"], 50.0, 1.0, 1000, instance=kw["instance"],
                        scale="study", device="cpu", seed=0)
    with pytest.raises(ValueError, match="600 test episodes"):
        results.row("06_mann", "mann", "omniglot", 5, None, "instance_accuracy", 50.0, 1.0, 100, instance=2,
                    scale="study", device="cpu", seed=0)


def test_a_rows_file_from_before_a_qualifier_existed_reads_it_as_not_applying(tmp_path) -> None:
    """A chapter's rows written before the ``instance`` column existed still read (the column as <NA>); a file that
    lacks any other column, or has its qualifiers out of order, is refused."""
    path = results.write_metrics("nb", [_row(), _row(shots=5, value=99.5)], tmp_path, curves=CURVES)[0]
    table = pd.read_csv(path, dtype=str)
    table.drop(columns="instance").to_csv(path, index=False)
    back = results.read_rows(path)
    assert list(back.columns) == results.COLUMNS and back.instance.isna().all() and back.instance.dtype == "Int64"
    assert list(back.value) == [98.0, 99.5]
    for broken in (table.drop(columns="value"), table[[c for c in table.columns if c != "variant"] + ["variant"]]):
        broken.to_csv(path, index=False)
        with pytest.raises(ValueError, match="results schema"):
            results.read_rows(path)
