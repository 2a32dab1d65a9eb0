"""The study's results schema: one metrics JSON per notebook, one tidy table for all of them.

Each notebook writes ``<out_dir>/metrics/<notebook>.json`` holding its rows; the ``results`` DVC stage
gathers every metrics file into ``reports/results.csv`` with the columns :data:`COLUMNS`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from .files import atomic_path

COLUMNS = ["notebook", "method", "dataset", "ways", "shots", "metric", "value", "ci95", "n_test", "scale",
           "train_seconds", "device", "seed"]
METRICS = {"accuracy", "mse", "roc_auc", "delta_auprc", "episodes_per_s", "seconds_per_step"}
DATASETS = {"omniglot", "cifar_fs", "sinusoid", "fsmol", "tox21", "sider", "muv", "toxcast"}
SCALES = {"smoke", "study", "paper"}


def row(notebook: str, method: str, dataset: str, ways: int | None, shots: int | None, metric: str,
        value: float, ci95: float | None = None, n_test: int | None = None, *, scale: str,
        train_seconds: float | None = None, device: str, seed: int) -> dict:
    """One validated row of the results table (accuracy and roc_auc in percent)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {sorted(SCALES)}")
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    if metric in ("accuracy", "roc_auc") and not 0 <= value <= 100:
        raise ValueError(f"{metric} is a percentage in [0, 100], got {value}")
    if ci95 is not None and not (math.isfinite(ci95) and ci95 >= 0):
        raise ValueError(f"ci95 must be a finite half-width >= 0, got {ci95}")
    if metric == "accuracy" and scale != "smoke" and (n_test is None or n_test < 600):
        raise ValueError(f"{scale}-scale accuracies need >= 600 test episodes, got n_test={n_test}")
    return dict(zip(COLUMNS, [notebook, method, dataset, ways, shots, metric, float(value), ci95, n_test, scale,
                              train_seconds, device, seed], strict=True))


def write_metrics(notebook: str, rows: list[dict], out_dir: Path, extra: dict | None = None) -> Path:
    """Write ``out_dir/metrics/<notebook>.json`` (rows + free-form ``extra``) atomically."""
    bad = [r for r in rows if list(r) != COLUMNS or r["notebook"] != notebook]
    if bad:
        raise ValueError(f"rows must come from results.row(...) with notebook={notebook!r}: {bad[:1]}")
    path = Path(out_dir) / "metrics" / f"{notebook}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"notebook": notebook, "rows": rows, **(extra or {})}, indent=1) + "\n")
    return path


def collect(metrics_dir: Path, out_csv: Path) -> pd.DataFrame:
    """Gather every ``metrics_dir/*.json`` into the tidy table ``out_csv`` (written atomically)."""
    files = sorted(Path(metrics_dir).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no metrics files in {metrics_dir}; run the notebooks' stages first (dvc repro)")
    frames = []
    for path in files:
        rows = json.loads(path.read_text())["rows"]
        bad = [r for r in rows if list(r) != COLUMNS or r["notebook"] != path.stem]
        if bad:
            raise ValueError(f"{path}: rows do not follow the results schema: {bad[:1]}")
        frames.append(pd.DataFrame(rows, columns=COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    for column in ("ways", "shots", "n_test", "seed"):  # integers with gaps (e.g. no n_test for a benchmark)
        table[column] = table[column].astype("Int64")
    with atomic_path(Path(out_csv)) as tmp:
        table.to_csv(tmp, index=False)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m metalearn.results")
    parser.add_argument("--metrics-dir", type=Path, default=Path("reports/metrics"))
    parser.add_argument("--out", type=Path, default=Path("reports/results.csv"))
    args = parser.parse_args(argv)
    table = collect(args.metrics_dir, args.out)
    print(f"{len(table)} rows -> {args.out}")


if __name__ == "__main__":
    main()
