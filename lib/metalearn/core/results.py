"""The study's results schema: validated rows, three files per notebook, one tidy table for all of them.

Each notebook makes one call, :func:`write_metrics`, which writes (each file atomically)

- ``<out_dir>/rows/<notebook>.csv``: its rows, with the columns :data:`COLUMNS` (what the ``results`` stage
  gathers into ``reports/results.csv``, and what other chapters read back with :func:`read_rows`);
- ``<out_dir>/metrics/<notebook>.json``: the same numbers only, nested by dataset, setting, method and the row's
  qualifiers (``{"omniglot": {"5w1s": {"protonet": {"accuracy": 98.1, "accuracy_ci95": 0.3}}}}``), for
  ``dvc metrics show`` / ``dvc metrics diff``;
- ``<out_dir>/curves/<notebook>.csv``: the training curves (``series, step, seconds, loss[, accuracy]``), and
  ``<out_dir>/curves/<notebook>_validation.csv``: the validation checks (``series, step, seconds, val_accuracy``:
  accuracy on episodes of the validation classes, the learning curve models are selected on), for ``dvc plots``.

A row's ``value`` is a mean and ``ci95`` the half-width of its 95% interval over ``n_test`` units: test episodes
for ``accuracy`` and ``instance_accuracy``, test assays for ``delta_auprc`` and ``roc_auc`` (each assay's mean over
its support draws), test tasks for the sinusoid's ``mse``, always with t quantiles; a timing or a ratio has neither.
A row's ``seed`` is its model's training seed: a method trained with several seeds has a row per seed.

A chapter whose methods other chapters compare with episode by episode (or assay by assay) also writes, with
:func:`write_episodes`, ``<out_dir>/episodes/<notebook>.csv``: every test unit's value (``method, dataset, ways,
shots, seed, episode_seed, queries, data, metric, unit, value``; ``seed`` the model's training seed, ``episode_seed``
the draw of the test episodes), read back with :func:`read_episodes`. Two methods pair on units drawn alike (episode
seed, queries, data, metric); several training seeds of a method give a ``[seeds, units]`` table.

The ``results`` stage (``python -m metalearn.core.results``) writes ``reports/results.csv`` and the accuracy-vs-shots
tables ``reports/plots/accuracy_vs_shots_<dataset>_<ways>way.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Literal, overload

import pandas as pd

from metalearn.core.files import atomic_path

COLUMNS = ["notebook", "method", "variant", "trained_on", "dataset", "ways", "shots", "adapt_steps", "meta_batch",
           "inner_steps", "instance", "budget", "metric", "value", "ci95", "n_test", "scale", "train_seconds",
           "train_steps", "train_examples", "device", "seed"]
INT_COLUMNS = ("ways", "shots", "adapt_steps", "meta_batch", "inner_steps", "instance", "budget", "n_test",
               "train_steps", "train_examples", "seed")
STR_COLUMNS = ("notebook", "method", "variant", "trained_on", "dataset", "metric", "scale", "device")
# What tells apart the rows of one method in one setting: the implementation, the training set under task shift,
# adaptation steps at test time, the meta-batch and inner steps of a timed (or trained) meta-step, and the
# presentation of a class in a sequence (Santoro et al.'s per-instance accuracy), and the training budget of a
# checkpoint taken at a fixed budget (the families at equal compute: nominal seconds on the study's machine).
QUALIFIERS = ("variant", "trained_on", "adapt_steps", "meta_batch", "inner_steps", "instance", "budget")
# Columns a rows file written before they existed may lack (read as <NA>): the qualifiers and the budget's units.
OPTIONAL_COLUMNS = (*QUALIFIERS, "train_steps", "train_examples")
# val_<metric>: the validation score a model was selected on (same method, setting, qualifiers and seed as its test
# row), what "the best of a family" is chosen by; never a test number.
METRICS = {"accuracy", "instance_accuracy", "mse", "roc_auc", "delta_auprc", "val_accuracy", "val_roc_auc",
           "val_delta_auprc", "episodes_per_s", "seconds_per_step", "graph_mb", "evaluation_speedup"}
PERCENT_METRICS = ("accuracy", "instance_accuracy", "roc_auc", "val_accuracy", "val_roc_auc")
EPISODE_METRICS = ("accuracy", "instance_accuracy")  # scored on test episodes: >= 600 of them beyond smoke scale
DATASETS = {"omniglot", "cifar_fs", "sinusoid", "fsmol", "tox21", "sider", "muv", "toxcast"}
SCALES = {"smoke", "study", "paper"}
# lib (one task at a time), lib_batched / lib_parallel (fast_maml), lib_head (ANIL's body once per task), and the
# two reference libraries
VARIANTS = {"lib", "lib_batched", "lib_parallel", "lib_head", "torchmeta", "higher"}
METHOD_ID = re.compile(r"^[a-z][a-z0-9_]*$")
CURVE_COLUMNS = ["series", "step", "seconds", "loss", "accuracy"]  # seconds, accuracy where the training loop logs them
VALIDATION_COLUMNS = ["series", "step", "seconds", "val_accuracy"]


def _int(name: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int or None, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


@overload
def _float(name: str, value: object, optional: Literal[False]) -> float: ...
@overload
def _float(name: str, value: object, optional: bool = True) -> float | None: ...
def _float(name: str, value: object, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number{' or None' if optional else ''}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _choice(name: str, value: object, known: set[str], optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if value not in known:
        raise ValueError(f"unknown {name} {value!r}; choose from {sorted(known)}")
    return str(value)


def row(notebook: str, method: str, dataset: str, ways: int | None, shots: int | None, metric: str,
        value: float, ci95: float | None = None, n_test: int | None = None, *, scale: str,
        train_seconds: float | None = None, train_steps: int | None = None, train_examples: int | None = None,
        device: str, seed: int, variant: str | None = None, trained_on: str | None = None,
        adapt_steps: int | None = None, meta_batch: int | None = None, inner_steps: int | None = None,
        instance: int | None = None, budget: int | None = None) -> dict:
    """One validated row of the results table, a dict with the keys :data:`COLUMNS` (accuracy and roc_auc in
    percent). ``method`` is a plain identifier (``maml``, ``protonet_train_5way``); what used to be written into it
    goes to its own column: ``variant`` (the implementation, one of :data:`VARIANTS`), ``trained_on`` (the data set
    the model was trained on when it is not ``dataset``: task shift), ``adapt_steps`` (SGD steps on the support set
    at test time), ``meta_batch`` and ``inner_steps`` (tasks per meta-step and inner-loop steps per task of a timed
    or trained meta-step), ``instance`` (the n-th presentation of a class in a sequence: the rows of metric
    ``instance_accuracy``, and only those), ``budget`` (a checkpoint taken at a fixed training budget: its nominal
    seconds on the study's machine, whose deterministic unit is the steps at the method's stated pace; the measured
    seconds are ``train_seconds``). ``seed`` is the training seed of the model (a method trained with several seeds
    has one row each); ``train_seconds``, ``train_steps`` and ``train_examples`` are its training budget (measured
    seconds, optimiser steps, examples seen: the deterministic unit). ``TypeError`` on a wrong type, ``ValueError``
    on a wrong value."""
    if not isinstance(method, str) or not METHOD_ID.match(method):
        raise ValueError(f"method must be a plain identifier ({METHOD_ID.pattern}), got {method!r}; settings go to "
                         f"their own columns ({', '.join(QUALIFIERS)})")
    for name, text in (("notebook", notebook), ("device", device)):
        if not isinstance(text, str) or not text:
            raise TypeError(f"{name} must be a non-empty string, got {text!r}")
    _choice("metric", metric, METRICS)
    _choice("dataset", dataset, DATASETS)
    _choice("scale", scale, SCALES)
    _choice("variant", variant, VARIANTS, optional=True)
    if _choice("trained_on", trained_on, DATASETS, optional=True) == dataset:
        raise ValueError(f"trained_on is for task shift (another data set than {dataset!r}); leave it None")
    value = _float("value", value, optional=False)
    if metric in PERCENT_METRICS and not 0 <= value <= 100:
        raise ValueError(f"{metric} is a percentage in [0, 100], got {value}")
    ci95, train_seconds = _float("ci95", ci95), _float("train_seconds", train_seconds)
    if ci95 is not None and ci95 < 0:
        raise ValueError(f"ci95 must be a half-width >= 0, got {ci95}")
    ints = {name: _int(name, v) for name, v in (("ways", ways), ("shots", shots), ("adapt_steps", adapt_steps),
                                                 ("meta_batch", meta_batch), ("inner_steps", inner_steps),
                                                 ("instance", instance), ("n_test", n_test), ("seed", seed),
                                                 ("budget", budget), ("train_steps", train_steps),
                                                 ("train_examples", train_examples))}
    if ints["seed"] is None:
        raise TypeError("seed must be an int")
    instance = ints["instance"]
    if (metric == "instance_accuracy") != (instance is not None) or (instance is not None and instance < 1):
        raise ValueError(f"instance (the n-th presentation, >= 1) goes with the metric instance_accuracy and only with "
                         f"it; got metric={metric!r}, instance={instance!r}")
    if metric in EPISODE_METRICS and scale != "smoke" and (ints["n_test"] is None or ints["n_test"] < 600):
        raise ValueError(f"{scale}-scale {metric} needs >= 600 test episodes, got n_test={n_test}")
    values = dict(notebook=notebook, method=method, variant=variant, trained_on=trained_on, dataset=dataset,
                  metric=metric, value=value, ci95=ci95, scale=scale, train_seconds=train_seconds, device=device,
                  **ints)
    return {column: values[column] for column in COLUMNS}


def setting_key(ways: int | None, shots: int | None) -> str:
    """The metrics files' setting level: ``"5w1s"``, ``"5shot"`` (no ways, e.g. sinusoid regression), ``"5way"``
    (no shots) or ``"all"`` (neither)."""
    if ways is not None and shots is not None:
        return f"{ways}w{shots}s"
    if shots is not None:
        return f"{shots}shot"
    return f"{ways}way" if ways is not None else "all"


def metrics_tree(rows: list[dict]) -> dict:
    """The rows' numbers nested as ``dataset / setting / method / qualifiers... / metric`` (qualifiers: the row's
    non-empty :data:`QUALIFIERS`, as ``lib_batched``, ``trained_on_omniglot``, ``adapt_steps_10``, ``meta_batch_32``,
    ``inner_steps_5``, ``budget_48000``) and, where a method has rows of several training seeds, ``seed_<s>``; each
    metric with its ``<metric>_ci95`` where the row has one. ``ValueError`` if two rows land on the same key."""
    def path(r: dict) -> tuple:
        quals = [r[q] if q == "variant" else f"{q}_{r[q]}" for q in QUALIFIERS if r[q] is not None]
        return (r["dataset"], setting_key(r["ways"], r["shots"]), r["method"], *quals)

    seeds: dict[tuple, set] = {}
    for r in rows:
        seeds.setdefault(path(r), set()).add(r["seed"])
    tree: dict = {}
    for r in rows:
        keys = path(r)
        quals = [*keys[3:], *([f"seed_{r['seed']}"] if len(seeds[keys]) > 1 else [])]
        node = tree
        for key in (*keys[:3], *quals):
            node = node.setdefault(key, {})
        if r["metric"] in node:
            raise ValueError(f"two rows for {'/'.join([r['dataset'], r['method'], *quals, r['metric']])} in "
                             f"setting {setting_key(r['ways'], r['shots'])}: tell them apart with {QUALIFIERS}")
        node[r["metric"]] = r["value"]
        if r["ci95"] is not None:
            node[f"{r['metric']}_ci95"] = r["ci95"]
    return tree


def write_metrics(notebook: str, rows: list[dict], out_dir: Path, *, curves: pd.DataFrame,
                  seconds: dict[str, float] | None = None) -> list[Path]:
    """Write ``out_dir/{rows,metrics,curves}/<notebook>.{csv,json,csv}`` and ``curves/<notebook>_validation.csv``
    (see the module docstring), each atomically; ``rows`` come from :func:`row` (validated again here), ``curves``
    has one row per logged step with the columns ``model`` (the fit's name: one line each), ``step``, ``loss`` and
    optionally ``seconds``, ``accuracy`` and ``val_accuracy`` (NaN where a step has none). ``seconds``
    (``{"training": ..., "evaluation": ...}``: the training seconds of the models the chapter uses and the seconds
    this run spent scoring them) goes into the metrics under ``"seconds"``. Return the four paths."""
    if seconds is not None and set(seconds) != {"training", "evaluation"}:
        raise ValueError(f"seconds has the keys training and evaluation, got {sorted(seconds)}")
    checked = [row(**r) for r in rows]
    bad = [r for r in checked if r["notebook"] != notebook]
    if bad:
        raise ValueError(f"rows must come from results.row(...) with notebook={notebook!r}: {bad[:1]}")
    missing = {"model", "step", "loss"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves need the columns model, step, loss; missing {sorted(missing)}")
    out_dir = Path(out_dir)
    paths = [out_dir / "rows" / f"{notebook}.csv", out_dir / "metrics" / f"{notebook}.json",
             out_dir / "curves" / f"{notebook}.csv", out_dir / "curves" / f"{notebook}_validation.csv"]
    with atomic_path(paths[0]) as tmp:
        pd.DataFrame(checked, columns=COLUMNS).astype({c: "Int64" for c in INT_COLUMNS}).to_csv(tmp, index=False)
    with atomic_path(paths[1]) as tmp:
        tree = metrics_tree(checked) | ({"seconds": {k: round(v, 1) for k, v in seconds.items()}} if seconds else {})
        tmp.write_text(json.dumps(tree, indent=1) + "\n")
    curve = curves.rename(columns={"model": "series"})
    with atomic_path(paths[2]) as tmp:
        train_rows = curve[curve["loss"].notna()]
        train_rows[[c for c in CURVE_COLUMNS if c in curve.columns]].to_csv(tmp, index=False)
    checks = curve.reindex(columns=VALIDATION_COLUMNS).dropna(subset=["val_accuracy"])
    with atomic_path(paths[3]) as tmp:
        checks.to_csv(tmp, index=False)
    return paths


EPISODE_COLUMNS = ["method", "dataset", "ways", "shots", "seed", "budget", "episode_seed", "queries", "data", "metric",
                   "unit", "value"]
# (method, dataset, ways, shots, training seed), and the budget of a checkpoint taken at a fixed budget
UnitKey = tuple[str, str, int | None, int | None, int] | tuple[str, str, int | None, int | None, int, int | None]


def write_episodes(notebook: str, per_unit: Mapping[UnitKey, Any], out_dir: Path, *, episode_seed: int,
                   queries: int | None, data: Mapping[str, str], metric: str | Mapping[str, str] = "accuracy") -> Path:
    """Write ``out_dir/episodes/<notebook>.csv`` (atomically): for each ``(method, dataset, ways, shots, seed)``
    (``seed``: the model's training seed; a sixth item: the ``budget`` of a checkpoint), its value on every test
    unit (an array ``[units]``, or an object with ``per_episode``): the accuracy of each test episode, or (``metric``
    ``roc_auc`` / ``delta_auprc``, one per data set as a mapping) each test assay's mean over its support draws. With
    the units' draw: ``episode_seed``, ``queries`` (None where there are none) and the test data's digest
    ``data[dataset]``, which a reader checks before pairing."""
    frames = []
    for key, res in per_unit.items():
        method, dataset, ways, shots, seed, budget = (*key, None) if len(key) == 5 else key
        values = getattr(res, "per_episode", res)
        frames.append(pd.DataFrame({
            "method": method, "dataset": dataset, "ways": ways, "shots": shots, "seed": seed, "budget": budget,
            "episode_seed": episode_seed, "queries": queries, "data": data[dataset],
            "metric": metric if isinstance(metric, str) else metric[dataset], "unit": range(len(values)),
            "value": values}))
    path = Path(out_dir) / "episodes" / f"{notebook}.csv"
    with atomic_path(path) as tmp:
        table = pd.concat(frames, ignore_index=True)[EPISODE_COLUMNS]
        table.astype({c: "Int64" for c in ("ways", "shots", "budget", "queries")}).to_csv(tmp, index=False)
    return path


def read_episodes(path: Path, method: str, dataset: str, ways: int | None, shots: int | None, *, seed: int,
                  episode_seed: int, queries: int | None, data: str, metric: str = "accuracy",
                  budget: int | None = None) -> Any:
    """The per-unit values ``[n]`` of ``method``'s model of training seed ``seed`` (its checkpoint at ``budget``,
    where given) in one setting from a :func:`write_episodes` file; a ``ValueError`` names what differs if its units
    were not drawn like ours (episode seed, queries, test data, metric). A file written before the ``budget`` column
    reads it as empty."""
    table = pd.read_csv(path, dtype={c: "Int64" for c in ("ways", "shots", "seed", "budget", "episode_seed",
                                                          "queries")})
    if "budget" not in table.columns:
        table.insert(EPISODE_COLUMNS.index("budget"), "budget", pd.Series(pd.NA, index=table.index, dtype="Int64"))
    if list(table.columns) != EPISODE_COLUMNS:
        raise ValueError(f"{path}: not an episodes file (columns {EPISODE_COLUMNS}); re-run its chapter")
    part = table[(table.method == method) & (table.dataset == dataset) & _same(table.ways, ways)
                 & _same(table.shots, shots) & (table.seed == seed) & _same(table.budget, budget)]
    what = (f"{method} (training seed {seed}{'' if budget is None else f', budget {budget}'}) on {dataset} "
            f"{setting_key(ways, shots)}")
    if part.empty:
        raise ValueError(f"{path} has no units of {what}; run its chapter first")
    drawn = {"episode_seed": episode_seed, "queries": queries, "data": data, "metric": metric}
    first = part.iloc[0]
    differs = {k: (_plain(first[k]), v) for k, v in drawn.items() if _plain(first[k]) != v}
    if differs:
        raise ValueError(f"{path}: {what} was tested on other units "
                         f"({', '.join(f'{k} {a!r} vs ours {b!r}' for k, (a, b) in differs.items())}): not paired")
    return part.sort_values("unit")["value"].to_numpy(float)


def _plain(value: Any) -> Any:
    """A table's scalar as a Python value (None for <NA>), to compare and to name in a message."""
    return None if pd.isna(value) else getattr(value, "item", lambda: value)()


def _same(column: pd.Series, value: int | None) -> pd.Series:
    """column == value, <NA> matching None."""
    return column.isna() if value is None else column.eq(value).fillna(False).astype(bool)


def read_rows(path: Path) -> pd.DataFrame:
    """A notebook's rows file (``rows/<notebook>.csv``) as a table with the columns :data:`COLUMNS` (integers as
    ``Int64``, gaps as ``<NA>``); ``ValueError`` if it does not follow the schema. A qualifier column that the file
    lacks (it was written before that qualifier existed) reads as ``<NA>``: the qualifier does not apply to its rows,
    so adding a qualifier does not invalidate a chapter's results; so does a budget column (``train_steps``,
    ``train_examples``) that it lacks: not recorded."""
    path = Path(path)
    table = pd.read_csv(path, dtype={**{c: "Int64" for c in INT_COLUMNS}, **{c: "str" for c in STR_COLUMNS}})
    present = [c for c in COLUMNS if c in table.columns or c not in OPTIONAL_COLUMNS]
    if list(table.columns) != present or (table.notebook != path.stem).any():
        raise ValueError(f"{path}: rows do not follow the results schema (columns {COLUMNS}, notebook {path.stem})")
    return table.reindex(columns=COLUMNS).astype({c: "Int64" for c in INT_COLUMNS})


def collect(rows_dir: Path, out_csv: Path) -> pd.DataFrame:
    """Gather every ``rows_dir/*.csv`` into the tidy table ``out_csv`` (written atomically)."""
    files = sorted(Path(rows_dir).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no rows files in {rows_dir}; run the notebooks' stages first (dvc repro)")
    table = pd.concat([read_rows(path) for path in files], ignore_index=True)
    with atomic_path(Path(out_csv)) as tmp:
        table.to_csv(tmp, index=False)
    return table


def accuracy_vs_shots(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Test accuracy by shots, one table per ``"<dataset>_<ways>way"`` with the columns ``series`` (``"method
    (notebook number)"``), ``shots``, ``accuracy``, ``ci95``: the accuracy rows without qualifiers (no task shift,
    no variant) of every method evaluated at two or more shot counts."""
    plain = table[(table.metric == "accuracy") & table[list(QUALIFIERS)].isna().all(axis=1)
                  & table.ways.notna() & table.shots.notna()]
    plain = plain.assign(series=plain.method + " (" + plain.notebook.str[:2] + ")", accuracy=plain.value)
    panels = {}
    for (dataset, ways), panel in plain.groupby(["dataset", "ways"]):
        counts = panel.groupby("series").shots.nunique()
        keep = panel[panel.series.isin(counts[counts >= 2].index)]
        if len(keep):
            panels[f"{dataset}_{ways}way"] = keep.sort_values(["series", "shots"])[["series", "shots", "accuracy",
                                                                                     "ci95"]]
    return panels


def main(argv: list[str] | None = None) -> None:
    """``python -m metalearn.core.results``: the ``results`` stage (tidy table and accuracy-vs-shots tables)."""
    parser = argparse.ArgumentParser(prog="python -m metalearn.core.results")
    parser.add_argument("--rows-dir", type=Path, default=Path("reports/rows"))
    parser.add_argument("--out", type=Path, default=Path("reports/results.csv"))
    parser.add_argument("--plots-dir", type=Path, default=Path("reports/plots"))
    args = parser.parse_args(argv)
    table = collect(args.rows_dir, args.out)
    print(f"{len(table)} rows -> {args.out}")
    for name, panel in accuracy_vs_shots(table).items():
        path = args.plots_dir / f"accuracy_vs_shots_{name}.csv"
        with atomic_path(path) as tmp:
            panel.to_csv(tmp, index=False)
        print(f"{panel.series.nunique()} series -> {path}")


if __name__ == "__main__":
    main()
