"""Notebook glue shared by the method chapters: train a named model (resumable), evaluate each
(model, setting) once on the fixed test episodes, and compare with the papers' numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from torch import nn

from .episodes import ClassDataset, EpisodeSampler
from .evaluate import EvalResult, evaluate
from .fewshot import predictor, train_episodic
from .train import TrainResult, checkpoint_path


def fit(name: str, model: nn.Module, sampler: EpisodeSampler, steps: int, *, notebook: str, seed: int,
        checkpoint_dir: str = "", lr: float = 1e-3, halve_lr_every: int = 0,
        train_fn: Callable[..., TrainResult] = train_episodic) -> tuple[pd.DataFrame, float]:
    """Train ``model`` episodically (checkpointed under ``checkpoint_dir`` when given, keyed by the
    configuration and the library's code); return its training curve and training seconds."""
    config = dict(name=name, ways=sampler.ways, shots=sampler.shots, queries=sampler.queries, steps=steps, lr=lr,
                  halve_lr_every=halve_lr_every, seed=seed, model=repr(model))
    ckpt = checkpoint_path(Path(checkpoint_dir), f"{notebook}-{name}", config) if checkpoint_dir else None
    res = train_fn(model, sampler, steps, lr=lr, halve_lr_every=halve_lr_every, seed=seed, checkpoint=ckpt,
                   log_every=max(1, steps // 40), desc=name)
    print(f"{name}: {sampler.ways}-way {sampler.shots}-shot {sampler.queries}-query, {steps} episodes "
          f"in {res.seconds:.0f} s" + (f" (resumed at {res.resumed_from})" if res.resumed_from else ""))
    return pd.DataFrame(res.history).assign(model=name), res.seconds


class Evaluator:
    """Accuracy of a model on the fixed test episodes of a setting, computed once per (model, setting)."""

    def __init__(self, test_sets: dict[str, ClassDataset], episodes: dict[str, int], queries: int, seed: int) -> None:
        self.test_sets, self.episodes, self.queries, self.seed = test_sets, episodes, queries, seed
        self._cache: dict[tuple, EvalResult] = {}

    def __call__(self, model: nn.Module, dataset: str, ways: int, shots: int,
                 test_data: ClassDataset | None = None) -> EvalResult:
        key = (id(model), dataset, ways, shots, id(test_data))
        if key not in self._cache:
            sampler = EpisodeSampler(test_data or self.test_sets[dataset], ways, shots, self.queries)
            self._cache[key] = evaluate(predictor(model), sampler, episodes=self.episodes[dataset], seed=self.seed)
        return self._cache[key]


def paper_comparison(results: dict[tuple[str, int, int], EvalResult], paper: dict[tuple[str, int, int], float],
                     allowed_gap: dict[tuple[str, int], float]) -> pd.DataFrame:
    """One row per setting: ours ± CI, the paper's number, the gap and whether it is within the allowed gap."""
    rows = []
    for (dataset, ways, shots), r in results.items():
        ref = paper.get((dataset, ways, shots))
        gap = None if ref is None else round(ref - r.mean, 2)
        allowed = allowed_gap.get((dataset, ways))
        rows.append({"dataset": dataset, "setting": f"{ways}w{shots}s", "ours": f"{r.mean:.2f} ± {r.ci95:.2f}",
                     "paper": ref, "gap": gap, "allowed gap": allowed,
                     "met": None if gap is None or allowed is None else gap <= allowed})
    return pd.DataFrame(rows)
