"""Chapter 11's glue: Reptile's plans (Nichol et al.'s test-time rule in each setting's settings) and its inner
learning rate chosen on validation classes. Reptile trains, and is scored, through the gradient chapters' shared glue
(:mod:`metalearn.study.gradient`) and the one evaluator (:mod:`metalearn.gradient.evaluation`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from metalearn.core.episodes import ClassDataset
from metalearn.gradient.inner_loop import Adaptation
from metalearn.gradient.reptile import ReptileTraining, train_reptile
from metalearn.study.experiment import FitContext
from metalearn.study.gradient import (
    Plan,
    Setting,
    evaluate_adapted,
    fit_meta_models,
    groups,
    plan,
    setting_group,
    setting_label,
)


def reptile_plans(settings: Mapping[str, Mapping[str, Any]], *, lr: float, inner_batch: Mapping[str, int],
                  eval_batch: Mapping[str, int]) -> dict[Setting, Plan[ReptileTraining]]:
    """Reptile's plans, as :func:`~metalearn.study.gradient.maml_plans`: the outer step size ε = ``lr`` (annealed
    linearly to 0), each group's inner minibatch size ``inner_batch[group]``, and Nichol et al.'s test-time rule:
    every parameter adapting, ``test_inner_steps`` steps of ``test_inner_lr`` on minibatches of
    ``eval_batch[setting_label(setting)]`` support examples (``--eval-batch``), each query predicted with the support
    set's BatchNorm statistics plus its own."""
    by_group = groups(settings)
    labels = {setting_label((d, w, k)) for d, w in by_group for k in (1, 5)}
    missing_groups = sorted({setting_group(d, w) for d, w in by_group} - set(inner_batch))
    if sorted(eval_batch) != sorted(labels) or missing_groups:
        raise ValueError(f"need inner_batch for every group {sorted(setting_group(d, w) for d, w in by_group)} and "
                         f"eval_batch for every setting {sorted(labels)}; got inner_batch {sorted(inner_batch)}, "
                         f"eval_batch {sorted(eval_batch)}")
    plans: dict[Setting, Plan[ReptileTraining]] = {}
    for (dataset, ways), g in by_group.items():
        for shots in (1, 5):
            test = Adaptation(steps=g["test_inner_steps"], lr=g["test_inner_lr"], inner="all", protocol="nichol",
                              minibatch=eval_batch[setting_label((dataset, ways, shots))])
            method = ReptileTraining(lr=lr, tasks=g["tasks"], inner_steps=g["inner_steps"], inner_lr=g["inner_lr"],
                                     inner_batch=inner_batch[setting_group(dataset, ways)], test=test)
            plans[(dataset, ways, shots)] = plan(method, g)
    return plans


def reptile_inner_lr_search(plans: Mapping[Setting, Plan[ReptileTraining]], train_sets: Mapping[str, ClassDataset],
                            val_sets: Mapping[str, ClassDataset], candidates: Mapping[str, Sequence[float]],
                            context: FitContext, *, steps: int, episodes: int,
                            ) -> tuple[pd.DataFrame, dict[Setting, Plan[ReptileTraining]]]:
    """Each data set's inner learning rate α chosen on its validation classes: for every rate in
    ``candidates[dataset]``, a Reptile model of the data set's 5-way 1-shot plan with α as its training and test step
    size (Nichol et al. use one α for both), ``steps`` meta-steps, named ``grid-lr<rate>``, scored by its test-time
    rule (Nichol's protocol) on ``episodes`` validation episodes (seed ``context.seed + 1``). Returns the grid
    (``dataset``, ``inner lr``, ``validation accuracy``) and ``plans`` with each searched data set's best α, for
    training and test."""
    def with_lr(p: Plan[ReptileTraining], lr: float) -> Plan[ReptileTraining]:
        return replace(p, settings=replace(p.settings, inner_lr=lr, test=replace(p.rule, lr=lr)))

    untied = sorted(setting_label(k) for k, p in plans.items() if k[0] in candidates and p.rule.lr != p.settings.inner_lr)
    if untied:
        raise ValueError(f"the search chooses one α for training and test (Nichol et al.'s), but {untied} set "
                         "test_inner_lr apart from inner_lr: set them equal for the searched data sets")
    records = []
    for dataset, rates in candidates.items():
        for lr in rates:
            plan = {(dataset, 5, 1): replace(with_lr(plans[(dataset, 5, 1)], lr), steps=steps)}
            models, _, _ = fit_meta_models(f"grid-lr{lr}", plan, train_sets, train_reptile, context)
            res = evaluate_adapted("reptile", models, plan, val_sets, episodes=episodes, seed=context.seed + 1)
            records.append({"dataset": dataset, "inner lr": lr,
                            "validation accuracy": res["reptile"][(dataset, 5, 1)].mean})
    grid = pd.DataFrame(records)
    best = grid.loc[grid.groupby("dataset")["validation accuracy"].idxmax()].set_index("dataset")["inner lr"]
    return grid, {k: with_lr(p, float(best[k[0]])) if k[0] in best else p for k, p in plans.items()}
