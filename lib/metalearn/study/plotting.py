"""One figure style for the whole study, and atomic figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.figure
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from metalearn.core.files import atomic_path


def set_style() -> None:
    """The study's seaborn style (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                                "axes.titleweight": "bold"})


def save_figure(fig: matplotlib.figure.Figure, out_dir: Path, notebook: str, name: str) -> Path:
    """Save ``fig`` as ``out_dir/figures/<notebook>/<name>.png`` (atomically) and return the path."""
    path = Path(out_dir) / "figures" / notebook / f"{name}.png"
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def learning_curves(curves: pd.DataFrame, *, step_label: str = "training step",
                    val_label: str = "5-way accuracy on validation classes (%)") -> matplotlib.figure.Figure:
    """Two panels from a chapter's curves (``model, step, seconds, loss[, val_accuracy]``, one line per model): the
    training loss against steps, and the validation checks against training seconds (what selection is made on)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for name, c in curves.groupby("model", sort=False):
        train_rows = c.dropna(subset=["loss"])
        axes[0].plot(train_rows["step"], train_rows["loss"], label=name)
        if "val_accuracy" in c and c["val_accuracy"].notna().any():
            checks = c.dropna(subset=["val_accuracy"])
            axes[1].plot(checks["seconds"], checks["val_accuracy"], marker="o", ms=3, label=name)
    axes[0].set(xlabel=step_label, ylabel="training loss", yscale="log", title="Training loss")
    axes[1].set(xlabel="training seconds", ylabel=val_label, title="Learning curves (model selection)")
    axes[0].legend(fontsize=7)
    return fig
