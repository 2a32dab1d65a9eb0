"""Chapter 11's glue: Reptile's models fitted per group of settings, its inner learning rate chosen on validation
classes, and its test-time rule (:func:`metalearn.gradient.reptile.adapt_support`) scored under both BatchNorm
protocols from one adaptation per episode.

Nichol, Achiam & Schulman (2018, code ``supervised_reptile/reptile.py``, ``evaluate``) adapt a new task with 50 SGD
steps on *minibatches* of its support set (``--eval-batch``: 5 for Omniglot 5-way and miniImageNet 1-shot, 10 for
20-way, 15 for miniImageNet 5-shot), cycling through it in a random order, every parameter adapting and BatchNorm
normalising each minibatch with its own statistics. Then, for a test example x_q:

    non-transductive (Nichol):  ŷ_q = f_θ'(x_q) with BatchNorm statistics of  support ∪ {x_q}
    transductive (Finn):        ŷ_q = f_θ'(x_q) with BatchNorm statistics of the query batch

The adaptation θ → θ' uses only the support set, so it is the same under both protocols: here it runs once per
episode and both rows are scored from it, on the same episodes. The non-transductive row scores one query per class
(the first of each class's queries, a uniform draw from its non-support images: Nichol's one per class, each costing a
forward pass of the whole support set); the transductive row scores all the episode's queries (K per class, or the
setup's ``test_queries``), the episodes of :func:`metalearn.study.gradient.evaluate_adapted` for the same seed.
:func:`shared_episodes` scores the same rule on the study's shared test episodes, which the summary pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd
import torch
from torch import nn

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator
from metalearn.core.evaluate import EvalResult, mean_ci95
from metalearn.core.inner_loop import BN_PROTOCOLS, check_inner_loop, query_outputs
from metalearn.core.models import Classifier
from metalearn.gradient.reptile import ReptileTraining, adapt_support, train_reptile
from metalearn.study.experiment import FitContext
from metalearn.study.gradient import (
    MetaSetup,
    Selection,
    Setting,
    evaluate_adapted,
    first_queries,
    fit_meta_models,
    inner_names,
    setting_group,
    setting_label,
)


@torch.no_grad()
def evaluate_protocols(method: str, models: Mapping[Setting, nn.Module], setups: Mapping[Setting, MetaSetup],
                       test_sets: Mapping[str, ClassDataset], *, episodes: int, seed: int, inner: str = "all",
                       eval_batch: Mapping[str, int] | None = None, protocols: Sequence[str] = BN_PROTOCOLS,
                       tasks_per_batch: int = 50) -> dict[str, dict[Setting, EvalResult]]:
    """Each model adapted once on the support set of each of ``episodes`` seeded test episodes (its setup's
    ``test_inner_steps`` steps at its ``inner_lr``, see :func:`adapt_support`; minibatches of
    ``eval_batch[setting_label(setting)]`` examples for the settings it names, which needs ``inner="all"``; else
    full-batch steps of the ``inner`` parameters, see :func:`~metalearn.study.gradient.inner_names`), then scored
    under each of ``protocols``: ``"nichol"`` as ``method`` (one query per class) and ``"transductive"`` as
    ``f"{method}_transductive"`` (all queries).
    Models scored with the same setups' ways, shots and queries and the same seed see the same episodes; the
    minibatch order is seeded with ``seed`` per setting."""
    eval_batch = dict(eval_batch or {})
    labels = {setting_label(k) for k in models}
    unknown = sorted(set(eval_batch) - labels)
    if episodes < 2 or unknown or any(b < 1 for b in eval_batch.values()):
        raise ValueError(f"need episodes >= 2 and eval_batch sizes >= 1 for settings among {sorted(labels)}, got "
                         f"episodes={episodes}, eval_batch={eval_batch}")
    if not protocols or set(protocols) - set(BN_PROTOCOLS):
        raise ValueError(f"protocols must be among {BN_PROTOCOLS}, got {protocols}")
    if eval_batch and inner != "all":
        raise ValueError(f"minibatch adaptation (eval_batch) adapts every parameter, as Nichol et al.'s; got "
                         f"inner={inner!r}: use inner='all' or no eval_batch")
    rows = [(name, protocol) for name, protocol in ((method, "nichol"), (f"{method}_transductive", "transductive"))
            if protocol in protocols]
    res: dict[str, dict[Setting, EvalResult]] = {name: {} for name, _ in rows}
    for key, model in models.items():
        (dataset, ways, shots), s = key, setups[key]
        names = check_inner_loop(model, s.test_inner_steps, s.inner_lr, inner_names(model, inner))
        batch = eval_batch.get(setting_label(key))
        sampler = EpisodeSampler(test_sets[dataset], ways, shots, s.test_queries or shots)
        first = first_queries(ways, sampler.queries, 1, sampler.dataset.device)  # one query per class
        g = make_generator(seed, sampler.dataset.device)
        torch.manual_seed(seed)
        accs: dict[str, list[torch.Tensor]] = {name: [] for name in res}  # on the device: one sync per setting
        for lo in range(0, episodes, tasks_per_batch):
            ep = sampler.sample(min(tasks_per_batch, episodes - lo), g)
            for sx, sy, qx, qy in zip(ep.support_x, ep.support_y, ep.query_x, ep.query_y, strict=True):
                adapted = adapt_support(model, sx, sy, steps=s.test_inner_steps, inner_lr=s.inner_lr, names=names,
                                        batch=batch)
                for name, protocol in rows:
                    idx = first if protocol == "nichol" else slice(None)
                    pred = query_outputs(model, adapted, sx, qx[idx], protocol).argmax(-1)
                    accs[name].append((pred == qy[idx]).double().mean() * 100)
        for name, values in accs.items():
            per_episode = torch.stack(values).cpu().numpy()
            res[name][key] = EvalResult(*mean_ci95(per_episode), episodes, per_episode)
    return res


def shared_episodes(method: str, models: Mapping[Setting, nn.Module], setups: Mapping[Setting, MetaSetup],
                    test_sets: Mapping[str, ClassDataset], *, episodes: int, seed: int, queries: int,
                    eval_batch: Mapping[str, int] | None = None,
                    done: Mapping[str, Mapping[Setting, EvalResult]] | None = None) -> dict[str, dict[Setting, EvalResult]]:
    """Reptile's test-time rule (:func:`evaluate_protocols`, every parameter adapting on ``eval_batch``'s minibatches)
    on the study's shared test episodes, those the other chapters score on (``episodes`` seeded episodes of
    ``queries`` queries per class), under the transductive protocol: ``{f"{method}_transductive_{queries}q":
    {setting: result}}``. A setting whose own test episodes are these (``test_queries == queries``) reuses
    ``done[f"{method}_transductive"]``; the others are adapted again, on the shared episodes' support sets (more
    queries per class draw other support images)."""
    reuse = (done or {}).get(f"{method}_transductive", {})
    todo = {k: m for k, m in models.items() if k not in reuse or (setups[k].test_queries or k[2]) != queries}
    labels = {setting_label(k) for k in todo}
    computed = evaluate_protocols(method, todo, {k: replace(setups[k], test_queries=queries) for k in todo},
                                  test_sets, episodes=episodes, seed=seed, protocols=("transductive",),
                                  eval_batch={k: b for k, b in (eval_batch or {}).items() if k in labels})
    return {f"{method}_transductive_{queries}q": {k: computed[f"{method}_transductive"][k] if k in todo else reuse[k]
                                                   for k in models}}


def fit_reptile(method: str, setups: Mapping[Setting, MetaSetup], train_sets: dict[str, ClassDataset],
                inner_batch: Mapping[str, int], settings: ReptileTraining, context: FitContext,
                selection: Selection | None = None,
                ) -> tuple[dict[Setting, Classifier], pd.DataFrame, dict[Setting, float]]:
    """Reptile models for ``setups``: :func:`~metalearn.study.gradient.fit_meta_models` with
    :func:`~metalearn.gradient.reptile.train_reptile` and ``settings`` (every parameter adapts, BatchNorm's too, as
    in Nichol et al.'s code), each group of settings with its own inner minibatch size,
    ``inner_batch[setting_group(dataset, ways)]``."""
    groups: dict[tuple[str, int], dict[Setting, MetaSetup]] = {}
    for key, s in setups.items():
        groups.setdefault(key[:2], {})[key] = s
    models: dict[Setting, Classifier] = {}
    curves, seconds = [], {}
    for (dataset, ways), group in groups.items():
        own = replace(settings, inner_batch=inner_batch[setting_group(dataset, ways)])
        fitted, curve, sec = fit_meta_models(method, group, train_sets, train_reptile, own, context, selection)
        models |= fitted
        curves.append(curve)
        seconds |= sec
    return models, pd.concat(curves), seconds


def reptile_inner_lr_search(setups: Mapping[Setting, MetaSetup], train_sets: dict[str, ClassDataset],
                            val_sets: Mapping[str, ClassDataset], inner_batch: Mapping[str, int],
                            candidates: Mapping[str, Sequence[float]], settings: ReptileTraining,
                            context: FitContext, *, steps: int, episodes: int,
                            ) -> tuple[pd.DataFrame, dict[Setting, MetaSetup]]:
    """Each data set's inner learning rate chosen on its validation classes: for every rate in
    ``candidates[dataset]``, a Reptile model of the data set's 5-way 1-shot setup (``steps`` meta-steps, named
    ``grid-lr<rate>``; :func:`fit_reptile` with ``settings`` and ``context``) scored after adaptation on
    ``episodes`` validation episodes (the setup's test queries per class, seed ``context.seed + 1``). Returns the
    grid (``dataset``, ``inner lr``, ``validation accuracy``) and ``setups`` with each searched data set's best
    rate."""
    seed = context.seed
    records = []
    for dataset, rates in candidates.items():
        for lr in rates:
            setup = {(dataset, 5, 1): replace(setups[(dataset, 5, 1)], steps=steps, inner_lr=lr)}
            models, _, _ = fit_reptile(f"grid-lr{lr}", setup, train_sets, inner_batch, settings, context)
            res = evaluate_adapted("reptile", models, setup, val_sets, episodes=episodes, seed=seed + 1, inner="all")
            records.append({"dataset": dataset, "inner lr": lr,
                            "validation accuracy": res["reptile"][(dataset, 5, 1)].mean})
    grid = pd.DataFrame(records)
    best = grid.loc[grid.groupby("dataset")["validation accuracy"].idxmax()].set_index("dataset")["inner lr"]
    return grid, {k: replace(s, inner_lr=float(best[k[0]])) if k[0] in best else s for k, s in setups.items()}
