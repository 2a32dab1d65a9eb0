"""Notebook glue shared by the gradient-based chapters (MAML, FOMAML, Reptile, ANIL): the few-shot settings and their
budgets (a notebook's nested ``settings`` parameter), one meta-trained classifier per setting on the papers'
backbones, Reptile's minibatch sizes and inner learning-rate search, and the test accuracy after adaptation under both
BatchNorm protocols (Nichol et al.'s non-transductive one and the transductive one)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator
from metalearn.core.evaluate import EvalResult, PairedDifference, Validation, mean_ci95, paired_difference
from metalearn.core.inner_loop import INNER, Adapted, adapted_predictor, inner_names
from metalearn.core.models import Classifier, conv4_for
from metalearn.core.results import row
from metalearn.core.strided_conv4 import StridedConv4
from metalearn.core.train import TrainResult
from metalearn.study.experiment import FitContext, fit

Setting = tuple[str, int, int]  # (dataset, ways, shots)


@dataclass(frozen=True)
class MetaSetup:
    """One setting's meta-training budget and inner loop."""

    steps: int  # meta-steps
    tasks: int  # meta-batch
    inner_steps: int
    inner_lr: float
    test_inner_steps: int  # SGD steps on the support set at test time
    train_queries: int | None = None  # query examples per class in training tasks; None: K, the training shots
    test_queries: int | None = None  # query examples per class in test (and validation) tasks; None: K, the shots
    train_shots: int | None = None  # shots of the training tasks; None: the setting's own (one model per setting)


def setting_group(dataset: str, ways: int) -> str:
    """The name of a group of settings in the notebooks' ``settings`` parameter: ``"omniglot_20way"``."""
    return f"{dataset}_{ways}way"


def meta_setups(settings: Mapping[str, Mapping[str, Any]]) -> dict[Setting, MetaSetup]:
    """The 1- and 5-shot settings of each group of a notebook's ``settings`` parameter, ``{"<dataset>_<ways>way":
    {"steps", "tasks", "inner_steps", "inner_lr", "test_inner_steps"[, "train_queries"][, "test_queries"]
    [, "train_shots"]}}``: the fields of :class:`MetaSetup` (without ``train_queries`` / ``test_queries``, tasks have
    K queries per class, as many as their shots, as in Finn et al.'s Omniglot code; with ``train_shots``, one model
    meta-trained on tasks with that many shots serves both of the group's settings), e.g. Omniglot 5/20-way and
    CIFAR-FS 5-way."""
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


def setting_label(key: Setting) -> str:
    """``"omniglot 5w1s"``: how the notebooks' parameters name a setting."""
    dataset, ways, shots = key
    return f"{dataset} {ways}w{shots}s"


def with_steps(setups: Mapping[Setting, MetaSetup], steps: Mapping[str, int]) -> dict[Setting, MetaSetup]:
    """The settings that ``steps`` names (``{"omniglot 5w1s": 1800}``, see :func:`setting_label`) with that many
    meta-steps: a second model of a setting, matched to another method's seconds or meta-steps."""
    unknown = sorted(set(steps) - {setting_label(k) for k in setups})
    if unknown:
        raise ValueError(f"no setting {unknown}; the settings are {[setting_label(k) for k in setups]}")
    return {k: replace(s, steps=steps[setting_label(k)]) for k, s in setups.items() if setting_label(k) in steps}


def equal_time(setups: Mapping[Setting, MetaSetup], labels: Sequence[str], seconds: Mapping[Setting, float],
               target_seconds: Mapping[Setting, float]) -> dict[Setting, MetaSetup]:
    """The settings that ``labels`` name (see :func:`setting_label`), with as many meta-steps (at least one) as take
    ``target_seconds`` (another method's training time) at the pace measured in ``seconds`` for ``setups``:
    steps x target / seconds, validation checks included. Training seconds are kept to 0.1 s
    (:func:`metalearn.study.experiment.fit`), so a run faster than that counts as 0.1 s."""
    named = {setting_label(k): k for k in setups}
    unknown = sorted(set(labels) - set(named))
    if unknown:
        raise ValueError(f"no setting {unknown}; the settings are {sorted(named)}")
    steps = {}
    for label in labels:
        k = named[label]
        if not (seconds[k] >= 0 and target_seconds[k] >= 0):
            raise ValueError(f"{label}: training times must be seconds >= 0, got {seconds[k]} and {target_seconds[k]}")
        steps[label] = max(1, round(setups[k].steps * target_seconds[k] / max(seconds[k], 0.1)))
    return with_steps(setups, steps)


def paired_by_setting(ours: Mapping[Setting, EvalResult], reference: Mapping[Setting, EvalResult],
                      ) -> dict[Setting, PairedDifference]:
    """Ours − reference on the same test episodes, for each of our settings."""
    return {k: paired_difference(r, reference[k]) for k, r in ours.items()}


def difference_column(differences: Mapping[Setting, PairedDifference], keys: Sequence[Setting]) -> list[str]:
    """A table column: ``"+1.23 ± 0.45"`` for each of ``keys``, ``"–"`` where ``differences`` has none."""
    return [f"{differences[k].mean:+.2f} ± {differences[k].ci95:.2f}" if k in differences else "–" for k in keys]


def backbone(dataset: str, image_shape: tuple[int, int, int]) -> nn.Module:
    """The gradient-based papers' backbones: on Omniglot Finn et al.'s (and Nichol et al.'s) strided Conv-4 with 64
    filters; on CIFAR-FS the max-pool Conv-4 with the 32 filters of their miniImageNet network."""
    if dataset == "omniglot":
        return StridedConv4(image_shape[0], 64)
    if dataset == "cifar_fs":
        return conv4_for(image_shape, hidden=32)
    raise ValueError(f"no gradient-based backbone for data set {dataset!r}; known: omniglot, cifar_fs")


NICHOL_QUERIES = 1  # Nichol et al.'s evaluation: one query per class, each its own forward pass with the support set


def protocol_queries(setup: MetaSetup, shots: int, protocol: str) -> int:
    """Query examples per class of a test or validation episode scored under a BatchNorm ``protocol``: one under
    ``"nichol"`` (Nichol et al.'s evaluation; each query costs a forward pass of the whole support set), else the
    setup's ``test_queries`` (K, the shots, if None: Finn et al.'s Omniglot code)."""
    return NICHOL_QUERIES if protocol == "nichol" else (setup.test_queries or shots)


@dataclass(frozen=True)
class Selection:
    """Model selection on validation classes: every ``every`` meta-steps, the accuracy after adaptation (the setup's
    test-time inner loop, BatchNorm ``protocol``) on ``episodes`` fixed episodes of ``val_sets[dataset]`` with the
    model's ways and training shots and :func:`protocol_queries` per class; the run ends with its best check."""

    val_sets: Mapping[str, ClassDataset]
    episodes: int
    every: int
    protocol: str = "transductive"


def fit_meta_models(method: str, setups: dict[Setting, MetaSetup], train_sets: dict[str, ClassDataset],
                    train_fn: Callable[..., TrainResult], settings: Any, context: FitContext,
                    selection: Selection | None = None,
                    ) -> tuple[dict[Setting, Classifier], pd.DataFrame, dict[Setting, float]]:
    """Meta-train one classifier (:func:`backbone` + linear head) per setting with ``train_fn`` (the method's entry
    point, e.g. :func:`~metalearn.gradient.fomaml.train_fomaml`) and ``settings`` (its settings dataclass, e.g.
    ``MetaTraining(lr=1e-3, cosine=True, inner="no_norms")``), whose meta-batch and inner loop each setting's
    :class:`MetaSetup` replaces; or one model per group of settings that share a setup with ``train_shots``. With
    ``selection``, each run keeps its best check on validation classes (adapting what ``settings.inner`` names;
    every parameter for a trainer without one, Reptile). Return the models, the training curves (with ``dataset``
    and ``setting`` columns: the training tasks') and the training seconds, by setting. ``context``: see
    :func:`metalearn.study.experiment.fit`."""
    inner = getattr(settings, "inner", "all")
    if inner not in INNER:  # before any work
        raise ValueError(f"inner must be one of {INNER}, got {inner!r}")
    trained: dict[Setting, tuple[Classifier, float]] = {}
    models, curves, seconds = {}, [], {}
    for (dataset, ways, shots), s in setups.items():
        key = (dataset, ways, s.train_shots or shots)
        if key not in trained:
            data = train_sets[dataset]
            torch.manual_seed(context.seed)
            model = Classifier(backbone(dataset, tuple(data.images.shape[2:])), ways).to(data.device)
            validation = None
            if selection is not None:
                val_sampler = EpisodeSampler(selection.val_sets[dataset], ways, key[2],
                                             protocol_queries(s, key[2], selection.protocol))
                validation = Validation(val_sampler,
                                        adapted_predictor(inner_steps=s.test_inner_steps, inner_lr=s.inner_lr,
                                                          names=inner_names(model, inner),
                                                          protocol=selection.protocol),
                                        episodes=selection.episodes, every=selection.every)
            own = replace(settings, tasks=s.tasks, inner_steps=s.inner_steps, inner_lr=s.inner_lr)
            curve, sec = fit(f"{method}-{dataset}-{ways}w{key[2]}s", model,
                             EpisodeSampler(data, ways, key[2], s.train_queries or key[2]), s.steps, train_fn, own,
                             context, validation)
            trained[key] = model, sec
            curves.append(curve.assign(dataset=dataset, setting=f"{ways}w{key[2]}s"))
        models[(dataset, ways, shots)], seconds[(dataset, ways, shots)] = trained[key]
    return models, pd.concat(curves), seconds


def evaluate_adapted(method: str, models: Mapping[Setting, torch.nn.Module], setups: Mapping[Setting, MetaSetup],
                     test_sets: Mapping[str, ClassDataset], *, episodes: int, seed: int, inner: str = "no_norms",
                     shared_queries: int | None = None, tasks_per_batch: int = 50,
                     ) -> dict[str, dict[Setting, EvalResult]]:
    """Each model adapted once on the support set of each of ``episodes`` seeded test episodes (its setup's
    ``test_inner_steps`` SGD steps of the ``inner`` parameters, see :func:`inner_names`), and that one adaptation
    scored in every row (the protocols share it; the episodes are the shared ones, Q = ``shared_queries`` queries per
    class, or, without them or where a row needs more queries than Q, episodes of that many):

        ``method``                            Nichol et al.'s non-transductive protocol and evaluation: the first
                                              query of each class, normalised with the support set plus itself
        ``f"{method}_transductive"``          the first :func:`protocol_queries` queries per class (the setup's
                                              ``test_queries``, K if None), normalised with their batch's statistics
                                              (Finn et al.'s)
        ``f"{method}_transductive_{Q}q"``     with ``shared_queries``: all Q = ``shared_queries`` queries per class,
                                              transductive: the study's shared test episodes, which the summary pairs
                                              with the other chapters' (the same sampler and seed)

    Every method scored with the same setups and seed sees the same episodes."""
    rows: dict[str, dict[Setting, EvalResult]] = {method: {}, f"{method}_transductive": {}}
    if shared_queries is not None:
        rows[f"{method}_transductive_{shared_queries}q"] = {}
    for key, model in models.items():
        (dataset, ways, shots), s = key, setups[key]
        own = protocol_queries(s, shots, "transductive")
        passes: dict[int, dict[str, tuple[str, int]]] = {}  # queries per class -> {row: (protocol, queries it scores)}
        main = shared_queries if shared_queries is not None and own <= shared_queries else own
        passes.setdefault(main, {})[method] = ("nichol", NICHOL_QUERIES)
        passes[main][f"{method}_transductive"] = ("transductive", own)
        if shared_queries is not None:
            passes.setdefault(shared_queries, {})[f"{method}_transductive_{shared_queries}q"] = ("transductive",
                                                                                               shared_queries)
        learner = Adapted(model, inner_steps=s.test_inner_steps, inner_lr=s.inner_lr, names=inner_names(model, inner))
        for queries, views in passes.items():
            sampler = EpisodeSampler(test_sets[dataset], ways, shots, queries)
            for name, per_episode in _scored_views(learner, sampler, views, episodes, seed, tasks_per_batch).items():
                rows[name][key] = EvalResult(*mean_ci95(per_episode), episodes, per_episode)
    return rows


def training_seconds(*fitted: tuple[Mapping[Setting, torch.nn.Module], Mapping[Setting, float]]) -> float:
    """The training seconds of the distinct models of one or more ``(models, seconds)`` pairs (a model serving
    several settings counts once)."""
    return sum({id(m): seconds[k] for models, seconds in fitted for k, m in models.items()}.values())


def first_queries(ways: int, queries: int, q: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The indices of the first ``q`` queries of each class in an episode of ``queries`` queries per class (the
    query set is ordered class by class): ``[ways * q]``."""
    return (torch.arange(ways, device=device)[:, None] * queries + torch.arange(q, device=device)).flatten()


def evaluation_speedup(models: Mapping[Setting, torch.nn.Module], setups: Mapping[Setting, MetaSetup],
                       test_sets: Mapping[str, ClassDataset], *, episodes: int, seed: int, shared_queries: int,
                       inner: str = "no_norms") -> pd.DataFrame:
    """The evaluation of :func:`evaluate_adapted` timed side by side, in one run, on the same ``episodes`` episodes
    of each setting: the loop it replaces (each row's own adaptation of each episode, one episode at a time: three
    adaptations per episode) against one adaptation per episode scoring every row, task-batched where that is faster
    (:class:`~metalearn.core.inner_loop.Adapted`). One row per setting: ``loop s``, ``batched s`` and
    ``evaluation_speedup`` (loop seconds / batched seconds)."""
    records = []
    for key, model in models.items():
        (dataset, ways, shots), s = key, setups[key]
        own = protocol_queries(s, shots, "transductive")
        queries = max(own, shared_queries)
        sampler = EpisodeSampler(test_sets[dataset], ways, shots, queries)
        ep = sampler.sample(episodes, make_generator(seed, sampler.dataset.device))
        first = {q: first_queries(ways, queries, q, ep.query_x.device) for q in (NICHOL_QUERIES, own, queries)}
        views = [("nichol", first[NICHOL_QUERIES]), ("transductive", first[own]), ("transductive", first[queries])]
        learner = Adapted(model, inner_steps=s.test_inner_steps, inner_lr=s.inner_lr, names=inner_names(model, inner))
        start = time.perf_counter()
        for view in views:  # the loop: every row adapts every episode again
            learner.views_per_task(ep.support_x, ep.support_y, ep.query_x, [view])
        loop = time.perf_counter() - start
        start = time.perf_counter()
        learner.views(ep.support_x, ep.support_y, ep.query_x, views)
        batched = time.perf_counter() - start
        records.append({"setting": setting_label(key), "episodes": episodes, "loop s": round(loop, 2),
                        "batched s": round(batched, 2), "evaluation_speedup": loop / batched,
                        "batched pass": learner.use_batched(ep.support_x)})
    return pd.DataFrame(records)


def _scored_views(learner: Adapted, sampler: EpisodeSampler, views: Mapping[str, tuple[str, int]], episodes: int,
                  seed: int, tasks_per_batch: int) -> dict[str, np.ndarray]:
    """Each episode's accuracy (%) in every view ``{row: (protocol, q)}``: the first q queries of each class of
    ``episodes`` seeded episodes of ``sampler``, scored under the protocol after one adaptation per episode."""
    dev, ways, queries = sampler.dataset.device, sampler.ways, sampler.queries
    index = {name: first_queries(ways, queries, q, dev) for name, (_, q) in views.items()}
    g = make_generator(seed, dev)
    accs: dict[str, list[torch.Tensor]] = {name: [] for name in views}
    for lo in range(0, episodes, tasks_per_batch):
        ep = sampler.sample(min(tasks_per_batch, episodes - lo), g)
        outs = learner.views(ep.support_x, ep.support_y, ep.query_x, [(p, index[n]) for n, (p, _) in views.items()])
        for name, out in zip(views, outs, strict=True):
            accs[name].append((out.argmax(-1) == ep.query_y[:, index[name]]).double().mean(1) * 100)
    return {name: torch.cat(values).cpu().numpy() for name, values in accs.items()}


def result_rows(notebook: str, res: Mapping[str, Mapping[Setting, EvalResult]], seconds: Mapping[Setting, float],
                **common: object) -> list[dict]:
    """One results row per (method, setting) of :func:`evaluate_adapted`'s results (``common``: the keyword
    arguments of :func:`metalearn.core.results.row` that all of them share, e.g. scale, device, seed)."""
    return [row(notebook, method, dataset, ways, shots, "accuracy", r.mean, r.ci95, r.n,
                train_seconds=seconds[(dataset, ways, shots)], **common)
            for method, by_setting in res.items() for (dataset, ways, shots), r in by_setting.items()]
