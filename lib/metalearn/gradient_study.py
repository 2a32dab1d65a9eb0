"""Notebook glue shared by the gradient-based chapters (MAML, FOMAML, Reptile, ANIL): the few-shot settings and their
budgets (a notebook's nested ``settings`` parameter), one meta-trained Conv-4 classifier per setting, Reptile's
minibatch sizes and inner learning-rate search, and the test accuracy after adaptation with and without transductive
BatchNorm."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from .episodes import ClassDataset, Episode, EpisodeSampler
from .evaluate import EvalResult, evaluate
from .inner_loop import head_names
from .maml import Adapted
from .meta_train import train_maml
from .models import Classifier, conv4_for
from .pipeline import params_section
from .reptile import train_reptile
from .results import QUALIFIERS, read_rows, row
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


def setting_group(dataset: str, ways: int) -> str:
    """The name of a group of settings in the notebooks' ``settings`` parameter: ``"omniglot_20way"``."""
    return f"{dataset}_{ways}way"


def meta_setups(settings: Mapping[str, Mapping[str, Any]]) -> dict[Setting, MetaSetup]:
    """The 1- and 5-shot settings of each group of a notebook's ``settings`` parameter, ``{"<dataset>_<ways>way":
    {"steps", "tasks", "inner_steps", "inner_lr", "train_queries", "test_inner_steps"[, "train_shots"]}}``: the
    fields of :class:`MetaSetup` (with ``train_shots``, one model meta-trained on tasks with that many shots serves
    both of the group's settings), e.g. Omniglot 5/20-way and CIFAR-FS 5-way."""
    known = [f.name for f in fields(MetaSetup)]
    required = [f.name for f in fields(MetaSetup) if f.default is MISSING]
    setups: dict[Setting, MetaSetup] = {}
    for group, entry in settings.items():
        name = re.fullmatch(r"(\w+)_(\d+)way", group)
        if name is None:
            raise ValueError(f"settings group {group!r} is not named <dataset>_<ways>way (e.g. omniglot_20way)")
        missing, unknown = [k for k in required if k not in entry], sorted(set(entry) - set(known))
        if missing or unknown:
            raise ValueError(f"settings[{group!r}] lacks {missing} or has unknown {unknown}; its fields are {known}")
        setup = MetaSetup(**entry)
        for shots in (1, 5):
            setups[(name[1], int(name[2]), shots)] = setup
    return setups


def fit_meta_models(method: str, setups: dict[Setting, MetaSetup], train_sets: dict[str, ClassDataset], *,
                    notebook: str, seed: int, checkpoint_dir: str = "", models_dir: str = "", read_only: bool = False,
                    lr: float = 1e-3, head_only: bool = False,
                    train_fn: Callable[..., TrainResult] = train_maml, **train_kwargs: object,
                    ) -> tuple[dict[Setting, Classifier], pd.DataFrame, dict[Setting, float]]:
    """Meta-train one Conv-4 classifier per setting with ``train_fn`` (MAML by default; ``train_kwargs`` such as
    ``first_order`` go to it; ``head_only``: the inner loop adapts only the head, ANIL), or one per group of settings
    that share a setup with ``train_shots``. Return the models, the training curves (with ``dataset`` and
    ``setting`` columns: the training tasks') and the training seconds, by setting. ``checkpoint_dir``,
    ``models_dir`` and ``read_only``: see :func:`metalearn.study.fit`."""
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
                             seed=seed, checkpoint_dir=checkpoint_dir, models_dir=models_dir, read_only=read_only,
                             lr=lr, train_fn=train_fn, tasks=s.tasks,
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


def fit_reptile(method: str, setups: Mapping[Setting, MetaSetup], train_sets: dict[str, ClassDataset],
                inner_batch: Mapping[str, int], **fit_kwargs: Any,
                ) -> tuple[dict[Setting, Classifier], pd.DataFrame, dict[Setting, float]]:
    """Reptile models for ``setups``: :func:`fit_meta_models` with :func:`~metalearn.reptile.train_reptile`, each
    group of settings with its own inner minibatch size, ``inner_batch[setting_group(dataset, ways)]``;
    ``fit_kwargs`` (``notebook``, ``seed``, ``checkpoint_dir``, ``lr``, ...) go to :func:`fit_meta_models`."""
    groups: dict[tuple[str, int], dict[Setting, MetaSetup]] = {}
    for key, s in setups.items():
        groups.setdefault(key[:2], {})[key] = s
    models: dict[Setting, Classifier] = {}
    curves, seconds = [], {}
    for (dataset, ways), group in groups.items():
        fitted, curve, sec = fit_meta_models(method, group, train_sets, train_fn=train_reptile,
                                             inner_batch=inner_batch[setting_group(dataset, ways)], **fit_kwargs)
        models |= fitted
        curves.append(curve)
        seconds |= sec
    return models, pd.concat(curves), seconds


def reptile_inner_lr_search(setups: Mapping[Setting, MetaSetup], train_sets: dict[str, ClassDataset],
                            val_sets: Mapping[str, ClassDataset], inner_batch: Mapping[str, int],
                            candidates: Mapping[str, Sequence[float]], *, steps: int, episodes: int, queries: int,
                            seed: int, **fit_kwargs: Any) -> tuple[pd.DataFrame, dict[Setting, MetaSetup]]:
    """Each data set's inner learning rate chosen on its validation classes: for every rate in
    ``candidates[dataset]``, a Reptile model of the data set's 5-way 1-shot setup (``steps`` meta-steps, named
    ``grid-lr<rate>``; :func:`fit_reptile` with ``seed`` and ``fit_kwargs``) scored after adaptation on ``episodes``
    validation episodes (``queries`` per class, seed ``seed + 1``). Returns the grid (``dataset``, ``inner lr``,
    ``validation accuracy``) and ``setups`` with each searched data set's best rate."""
    records = []
    for dataset, rates in candidates.items():
        for lr in rates:
            setup = {(dataset, 5, 1): replace(setups[(dataset, 5, 1)], steps=steps, inner_lr=lr)}
            models, _, _ = fit_reptile(f"grid-lr{lr}", setup, train_sets, inner_batch, seed=seed, **fit_kwargs)
            res = evaluate_adapted("reptile", models, setup, val_sets, episodes=episodes, queries=queries,
                                   seed=seed + 1)
            records.append({"dataset": dataset, "inner lr": lr,
                            "validation accuracy": res["reptile"][(dataset, 5, 1)].mean})
    grid = pd.DataFrame(records)
    best = grid.loc[grid.groupby("dataset")["validation accuracy"].idxmax()].set_index("dataset")["inner lr"]
    return grid, {k: replace(s, inner_lr=float(best[k[0]])) if k[0] in best else s for k, s in setups.items()}

def result_rows(notebook: str, res: Mapping[str, Mapping[Setting, EvalResult]], seconds: Mapping[Setting, float],
                **common: object) -> list[dict]:
    """One results row per (method, setting) of :func:`evaluate_adapted`'s results (``common``: the keyword
    arguments of :func:`metalearn.results.row` that all of them share, e.g. scale, device, seed)."""
    return [row(notebook, method, dataset, ways, shots, "accuracy", r.mean, r.ci95, r.n,
                train_seconds=seconds[(dataset, ways, shots)], **common)
            for method, by_setting in res.items() for (dataset, ways, shots), r in by_setting.items()]


def chapter_results(rows_path: str | Path, params_path: str | Path, methods: tuple[str, ...],
                    ) -> tuple[dict[str, dict[Setting, EvalResult]], dict[Setting, MetaSetup]]:
    """Another chapter's committed accuracies for ``methods`` (the plain rows, without qualifiers, of its rows file
    ``<reports>/rows/<notebook>.csv``), in :func:`evaluate_adapted`'s layout, and the setups it was trained with
    (:func:`meta_setups` of the ``settings`` of its section in the parameters file ``params_path``, e.g. ``maml``)."""
    rows_path = Path(rows_path)
    if not rows_path.exists():
        raise FileNotFoundError(f"{rows_path} does not exist: run that chapter's stage first "
                                f"(dvc repro -s {rows_path.stem})")
    table = read_rows(rows_path)
    plain = table[table.method.isin(methods) & (table.metric == "accuracy") & table[list(QUALIFIERS)].isna().all(axis=1)]
    res: dict[str, dict[Setting, EvalResult]] = {m: {} for m in methods}
    for r in plain.itertuples():
        res[r.method][(r.dataset, int(r.ways), int(r.shots))] = EvalResult(r.value, r.ci95, int(r.n_test), np.array([]))
    missing = [m for m, by_setting in res.items() if not by_setting]
    if missing:
        raise ValueError(f"{rows_path} has no accuracy rows for {missing}")
    params, section = yaml.safe_load(Path(params_path).read_text()), params_section(rows_path.stem)
    if section not in params:
        raise ValueError(f"{params_path} has no section {section!r}")
    return res, meta_setups(params[section]["settings"])
