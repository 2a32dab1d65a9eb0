"""The families at equal compute: each family's representative trained once per training seed, with its checkpoints
at nominal budgets (seconds on the study's machine), scored on the shared test episodes.

A budget of B seconds is ``round(B / pace)`` optimisation steps, where ``pace`` is the representative's seconds per
step on the study's idle machine, measured once and stated with its parameters: the steps are the deterministic unit
(a re-run reproduces every row), the measured seconds are printed beside them. The checkpoints at the smaller budgets
are those of the largest budget's run (chosen on validation so far; the learning-rate schedule, e.g. a cosine, is the
largest budget's), so one run per seed gives every budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
from torch import nn

from metalearn.core.evaluate import EvalResult, Validation
from metalearn.core.results import UnitKey, row
from metalearn.core.train import Trainer, seed_everything
from metalearn.study.experiment import Data, FitContext, S, budget, fit_snapshots

Fits = dict[tuple[int, int], tuple[nn.Module, pd.DataFrame, float]]  # (seed, budget s) -> (model, curve, seconds)


def budget_steps(seconds: Sequence[int], pace: float) -> dict[int, int]:
    """``{budget: steps}``: each nominal budget (seconds on the study's machine) as optimisation steps at ``pace``
    (seconds per step there), at least one step each."""
    if not pace > 0:
        raise ValueError(f"pace is seconds per step, > 0; got {pace}")
    if not seconds or any(not s > 0 for s in seconds) or len(set(seconds)) != len(seconds):
        raise ValueError(f"budgets are distinct positive seconds, got {list(seconds)}")
    steps = {int(s): max(1, round(s / pace)) for s in sorted(seconds)}
    if len(set(steps.values())) != len(steps):
        raise ValueError(f"budgets {list(seconds)} at {pace} s per step give equal steps {steps}: space them further")
    return steps


def fit_budgets(name: str, make_model: Callable[[], nn.Module], data: Data, budgets: Mapping[int, int],
                seeds: Sequence[int], train_fn: Trainer[S], settings: S, context: FitContext,
                validation: Validation | None = None) -> Fits:
    """One run of ``max(budgets)`` steps per training seed (``make_model()`` after seeding with it, so that each seed
    starts from its own initial weights) and its checkpoints at every budget (:func:`fit_snapshots`, stored as
    ``<name>-seed<s>@<steps>``): ``{(seed, budget): (model, curve, training seconds)}``."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{name}: seeds must be distinct, got {list(seeds)}")
    fits: Fits = {}
    for seed in seeds:
        seed_everything(seed)
        snaps = fit_snapshots(f"{name}-seed{seed}", make_model(), data, list(budgets.values()), train_fn, settings,
                              replace(context, seed=seed), validation)
        fits |= {(seed, b): snaps[steps] for b, steps in budgets.items()}
    return fits


def budget_results(notebook: str, setting: tuple[str, int, int], fits: Fits,
                   score: Callable[[nn.Module], Mapping[str, EvalResult]], *, scale: str, device: str,
                   ) -> tuple[list[dict], dict[UnitKey, EvalResult], pd.DataFrame]:
    """Score every checkpoint: ``score(model)`` gives ``{method: result}`` on the shared test episodes of ``setting``
    (e.g. fine-tuned and nearest-centroid, or under both BatchNorm protocols). Returns the results rows (each with
    its ``seed``, ``budget`` and budget columns), the per-unit results keyed ``(method, dataset, ways, shots, seed,
    budget)``, and a table: method, budget, seed, steps, examples, measured seconds, accuracy ± CI."""
    dataset, ways, shots = setting
    rows: list[dict] = []
    units: dict[UnitKey, EvalResult] = {}
    table: list[dict[str, Any]] = []
    for (seed, b), (model, curve, seconds) in sorted(fits.items()):
        spent = budget(curve, seconds)
        for method, res in score(model).items():
            rows.append(row(notebook, method, dataset, ways, shots, "accuracy", res.mean, res.ci95, res.n,
                            scale=scale, device=device, seed=seed, budget=b, **spent))
            units[(method, dataset, ways, shots, seed, b)] = res
            table.append({"method": method, "budget (s)": b, "seed": seed, "steps": spent["train_steps"],
                          "examples": spent["train_examples"], "measured (s)": round(seconds),
                          "accuracy": res.mean, "ci95": res.ci95})
    return rows, units, pd.DataFrame(table)
