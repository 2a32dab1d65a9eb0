"""One figure style for the whole study, and atomic figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.figure
import seaborn as sns

from .files import atomic_path


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
