"""Notebook glue shared by the gradient-based chapters (MAML, FOMAML, ANIL): the six few-shot settings and their
budgets, one meta-trained Conv-4 classifier per setting, and its test accuracy after adaptation with and without
transductive BatchNorm."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .episodes import ClassDataset, Episode, EpisodeSampler
from .evaluate import EvalResult, evaluate
from .inner_loop import head_names
from .maml import Adapted
from .meta_train import train_maml
from .models import Classifier, conv4_for
from .results import row
from .study import fit
from .train import TrainResult

Setting = tuple[str, int, int]  # (dataset, ways, shots)


@dataclass(frozen=True)
class MetaSetup:
    """One setting's meta-training budget and inner loop."""

    steps: int  # meta-steps
    tasks: int  # meta-batch
    inner_steps: int
    inner_lr: float
    train_queries: int  # query examples per class in training tasks
    test_inner_steps: int  # SGD steps on the support set at test time
    train_shots: int | None = None  # shots of the training tasks; None: the setting's own (one model per setting)


def meta_setups(p: Mapping[str, Any]) -> dict[Setting, MetaSetup]:
    """Omniglot 5/20-way and CIFAR-FS 5-way, 1 and 5 shots, from a notebook's parameters:
    ``omniglot_{steps,tasks,inner_steps,inner_lr}`` (5-way), the same with the suffix ``_20way``, ``cifar_{...}``,
    ``train_queries``, ``cifar_train_queries``, ``test_inner_steps_{omniglot,omniglot_20way,cifar}``, and optionally
    ``omniglot_train_shots``, ``omniglot_train_shots_20way``, ``cifar_train_shots`` (one model meta-trained on tasks
    with that many shots serves both of the group's settings)."""
    def setup(prefix: str, suffix: str, queries: int, test_steps: int) -> MetaSetup:
        return MetaSetup(*(p[f"{prefix}_{key}{suffix}"] for key in ("steps", "tasks", "inner_steps", "inner_lr")),
                         queries, test_steps, p.get(f"{prefix}_train_shots{suffix}"))

    five = setup("omniglot", "", p["train_queries"], p["test_inner_steps_omniglot"])
    twenty = setup("omniglot", "_20way", p["train_queries"], p["test_inner_steps_omniglot_20way"])
    cifar = setup("cifar", "", p["cifar_train_queries"], p["test_inner_steps_cifar"])
    return {("omniglot", 5, 1): five, ("omniglot", 5, 5): five, ("omniglot", 20, 1): twenty,
            ("omniglot", 20, 5): twenty, ("cifar_fs", 5, 1): cifar, ("cifar_fs", 5, 5): cifar}


def fit_meta_models(method: str, setups: dict[Setting, MetaSetup], train_sets: dict[str, ClassDataset], *,
                    notebook: str, seed: int, checkpoint_dir: str = "", lr: float = 1e-3, head_only: bool = False,
                    train_fn: Callable[..., TrainResult] = train_maml, **train_kwargs: object,
                    ) -> tuple[dict[Setting, Classifier], pd.DataFrame, dict[Setting, float]]:
    """Meta-train one Conv-4 classifier per setting with ``train_fn`` (MAML by default; ``train_kwargs`` such as
    ``first_order`` go to it; ``head_only``: the inner loop adapts only the head, ANIL), or one per group of settings
    that share a setup with ``train_shots``. Return the models, the training curves (with ``dataset`` and
    ``setting`` columns: the training tasks') and the training seconds, by setting."""
    trained: dict[Setting, tuple[Classifier, float]] = {}
    models, curves, seconds = {}, [], {}
    for (dataset, ways, shots), s in setups.items():
        key = (dataset, ways, s.train_shots or shots)
        if key not in trained:
            data = train_sets[dataset]
            torch.manual_seed(seed)
            model = Classifier(conv4_for(tuple(data.images.shape[2:])), ways).to(data.device)
            kwargs = {"names": head_names(model)} if head_only else {}
            curve, sec = fit(f"{method}-{dataset}-{ways}w{key[2]}s", model,
                             EpisodeSampler(data, ways, key[2], s.train_queries), s.steps, notebook=notebook,
                             seed=seed, checkpoint_dir=checkpoint_dir, lr=lr, train_fn=train_fn, tasks=s.tasks,
                             inner_steps=s.inner_steps, inner_lr=s.inner_lr, **kwargs, **train_kwargs)
            trained[key] = model, sec
            curves.append(curve.assign(dataset=dataset, setting=f"{ways}w{key[2]}s"))
        models[(dataset, ways, shots)], seconds[(dataset, ways, shots)] = trained[key]
    return models, pd.concat(curves), seconds


def evaluate_adapted(method: str, models: Mapping[Setting, torch.nn.Module], setups: Mapping[Setting, MetaSetup],
                     test_sets: Mapping[str, ClassDataset], *, episodes: int, queries: int, seed: int,
                     head_only: bool = False) -> dict[str, dict[Setting, EvalResult]]:
    """Each model adapted on the support set of each of ``episodes`` seeded test episodes (its setup's
    ``test_inner_steps`` SGD steps, head only if ``head_only``), then scored on ``queries`` queries per class:
    non-transductive (``method``: running statistics) and transductive (``f"{method}_transductive"``: the query
    batch's own statistics, the papers' protocol), both from the same adaptation."""
    names = (method, f"{method}_transductive")
    res: dict[str, dict[Setting, EvalResult]] = {name: {} for name in names}
    for (dataset, ways, shots), model in models.items():
        s = setups[(dataset, ways, shots)]
        learner = Adapted(model, inner_steps=s.test_inner_steps, inner_lr=s.inner_lr,
                          names=head_names(model) if head_only else None)

        def predict(ep: Episode, learner: Adapted = learner) -> dict[str, torch.Tensor]:
            outs = learner.outputs(ep.support_x, ep.support_y, ep.query_x, (False, True))
            return {name: out.argmax(-1) for name, out in zip(names, outs, strict=True)}

        scores = evaluate(predict, EpisodeSampler(test_sets[dataset], ways, shots, queries), episodes=episodes,
                          seed=seed)
        for name in names:
            res[name][(dataset, ways, shots)] = scores[name]
    return res


def result_rows(notebook: str, res: Mapping[str, Mapping[Setting, EvalResult]], seconds: Mapping[Setting, float],
                **common: object) -> list[dict]:
    """One ``reports/results.csv`` row per (method, setting) of :func:`evaluate_adapted`'s results."""
    return [row(notebook, method, dataset, ways, shots, "accuracy", r.mean, r.ci95, r.n,
                train_seconds=seconds[(dataset, ways, shots)], **common)
            for method, by_setting in res.items() for (dataset, ways, shots), r in by_setting.items()]


def chapter_results(path: str | Path, methods: tuple[str, ...]) -> tuple[dict[str, dict[Setting, EvalResult]], dict]:
    """Another chapter's committed accuracies (its ``reports/metrics/<notebook>.json``) for ``methods``, in
    :func:`evaluate_adapted`'s layout, and the file's other fields (e.g. the ``setups`` it was trained with)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run that chapter's stage first (dvc repro -s {path.stem})")
    record = json.loads(path.read_text())
    res: dict[str, dict[Setting, EvalResult]] = {m: {} for m in methods}
    for r in record["rows"]:
        if r["method"] in res and r["metric"] == "accuracy":
            res[r["method"]][(r["dataset"], r["ways"], r["shots"])] = EvalResult(r["value"], r["ci95"], r["n_test"],
                                                                                  np.array([]))
    missing = [m for m, by_setting in res.items() if not by_setting]
    if missing:
        raise ValueError(f"{path} has no accuracy rows for {missing}")
    return res, {k: v for k, v in record.items() if k != "rows"}
