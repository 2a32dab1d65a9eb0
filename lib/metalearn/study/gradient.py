"""Notebook glue shared by the gradient-based chapters (MAML, FOMAML, Reptile, ANIL): each few-shot setting's plan
(budget, task shapes, and the method's settings with its test-time rule), one meta-trained classifier per setting on
the papers' networks, Reptile's inner learning-rate search, and the rows of the one evaluator
(:mod:`metalearn.gradient.evaluation`).

A number has one home. A notebook's ``settings`` parameter holds, per group of settings, the budget and the inner
loop; :func:`maml_plans` and :func:`reptile_plans` turn each group into the method's settings object, every field set
from a parameter the notebook passes, and the object travels unchanged: to the trainer (``settings.inner_lr`` → the
inner loop's ``adapt``) and to the evaluator (``settings.test``, the test-time rule → ``Adapted`` → ``adapt``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import pandas as pd
import torch

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator
from metalearn.core.evaluate import EvalResult, PairedDifference, Validation, mean_ci95, paired_difference
from metalearn.core.models import Classifier
from metalearn.core.train import Trainer
from metalearn.gradient.evaluation import (
    NICHOL_QUERIES,
    TASKS_PER_BATCH,
    Adapted,
    adapted_predictor,
    evaluate,
    first_queries,
    protocol_queries,
)
from metalearn.gradient.inner_loop import Adaptation
from metalearn.gradient.networks import finn_network
from metalearn.gradient.outer_loop import MetaTraining
from metalearn.study.equal_compute import Fits, fit_budgets
from metalearn.study.experiment import FitContext, fit, scored_rows

Setting = tuple[str, int, int]  # (dataset, ways, shots)


class MethodSettings(Protocol):
    """What a plan reads of a gradient-based method's settings dataclass (``MetaTraining``, ``ReptileTraining``):
    its meta-batch, its inner loop and its test-time rule."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def tasks(self) -> int: ...

    @property
    def inner_steps(self) -> int: ...

    @property
    def inner_lr(self) -> float: ...

    @property
    def test(self) -> Adaptation | None: ...


S = TypeVar("S", bound=MethodSettings)


@dataclass(frozen=True)
class Plan(Generic[S]):
    """One few-shot setting's meta-training: ``steps`` meta-steps with ``settings`` (the method's settings: its
    meta-batch, inner loop and test-time rule ``settings.test``) on tasks of ``train_shots`` shots (None: the
    setting's own; a model meta-trained on 1-shot tasks can serve the 5-shot setting too) and ``train_queries`` query
    examples per class (None: K, the training shots, as Finn et al.'s Omniglot code); test and validation episodes
    with ``test_queries`` query examples per class (None: K)."""

    steps: int
    settings: S
    train_queries: int | None = None
    test_queries: int | None = None
    train_shots: int | None = None

    @property
    def rule(self) -> Adaptation:
        """The method's test-time rule (``settings.test``)."""
        if self.settings.test is None:
            raise ValueError(f"{type(self.settings).__name__} has no test-time rule (test=None): a plan needs one")
        return self.settings.test


GROUP_FIELDS = ("steps", "tasks", "inner_steps", "inner_lr", "test_inner_steps", "test_inner_lr")  # required
GROUP_OPTIONAL = ("train_queries", "test_queries", "train_shots")


def setting_group(dataset: str, ways: int) -> str:
    """The name of a group of settings in the notebooks' ``settings`` parameter: ``"omniglot_20way"``."""
    return f"{dataset}_{ways}way"


def setting_label(key: Setting) -> str:
    """``"omniglot 5w1s"``: how the notebooks' parameters name a setting."""
    dataset, ways, shots = key
    return f"{dataset} {ways}w{shots}s"


def groups(settings: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, int], Mapping[str, Any]]:
    """A notebook's ``settings`` parameter, ``{"<dataset>_<ways>way": {field: value}}``, checked: every group named
    so, with the fields :data:`GROUP_FIELDS` and at most :data:`GROUP_OPTIONAL`."""
    groups = {}
    for group, entry in settings.items():
        name = re.fullmatch(r"(\w+)_(\d+)way", group)
        if name is None:
            raise ValueError(f"settings group {group!r} is not named <dataset>_<ways>way (e.g. omniglot_20way)")
        missing = [k for k in GROUP_FIELDS if k not in entry]
        unknown = sorted(set(entry) - {*GROUP_FIELDS, *GROUP_OPTIONAL})
        if missing or unknown:
            raise ValueError(f"settings[{group!r}] lacks {missing} or has unknown {unknown}; its fields are "
                             f"{list(GROUP_FIELDS)} and optionally {list(GROUP_OPTIONAL)}")
        groups[(name[1], int(name[2]))] = entry
    return groups


def plan(settings: S, entry: Mapping[str, Any]) -> Plan[S]:
    """One setting's plan: ``settings`` and a group's budget and task shapes (``steps`` and :data:`GROUP_OPTIONAL`)."""
    return Plan(entry["steps"], settings, **{k: entry[k] for k in GROUP_OPTIONAL if k in entry})


def maml_plans(settings: Mapping[str, Mapping[str, Any]], *, lr: float, cosine: bool, inner: str,
               meta_step: str) -> dict[Setting, Plan[MetaTraining]]:
    """The 1- and 5-shot settings of each group of a notebook's ``settings`` parameter (see :func:`groups`), each
    with MAML's, FOMAML's or ANIL's settings: Adam's step size β = ``lr`` (``cosine``-annealed), the group's
    meta-batch ``tasks`` and inner loop (``inner_steps`` steps of ``inner_lr``, adapting ``inner``), the meta-step
    ``meta_step``, and the test-time rule: the group's ``test_inner_steps`` steps of ``test_inner_lr`` on the same
    parameters, predicting with the query batch's BatchNorm statistics (Finn et al.'s transductive protocol)."""
    plans: dict[Setting, Plan[MetaTraining]] = {}
    for (dataset, ways), g in groups(settings).items():
        test = Adaptation(steps=g["test_inner_steps"], lr=g["test_inner_lr"], inner=inner, protocol="transductive")
        method = MetaTraining(lr=lr, cosine=cosine, tasks=g["tasks"], inner_steps=g["inner_steps"],
                              inner_lr=g["inner_lr"], inner=inner, meta_step=meta_step, test=test)
        for shots in (1, 5):
            plans[(dataset, ways, shots)] = plan(method, g)
    return plans


def select(plans: Mapping[Setting, Plan[S]], labels: Iterable[str]) -> dict[Setting, Plan[S]]:
    """The plans of the settings that ``labels`` name (``"omniglot 5w1s"``, see :func:`setting_label`), as they are:
    e.g. the settings a further training seed re-trains."""
    labels = set(labels)
    unknown = sorted(labels - {setting_label(k) for k in plans})
    if unknown:
        raise ValueError(f"no setting {unknown}; the settings are {[setting_label(k) for k in plans]}")
    return {k: p for k, p in plans.items() if setting_label(k) in labels}


def with_steps(plans: Mapping[Setting, Plan[S]], steps: Mapping[str, int]) -> dict[Setting, Plan[S]]:
    """The settings that ``steps`` names (``{"omniglot 5w1s": 1800}``, see :func:`setting_label`) with that many
    meta-steps: a second model of a setting, matched to another method's seconds or meta-steps."""
    return {k: replace(p, steps=steps[setting_label(k)]) for k, p in select(plans, steps).items()}


def equal_time(plans: Mapping[Setting, Plan[S]], labels: Sequence[str], seconds: Mapping[Setting, float],
               target_seconds: Mapping[Setting, float]) -> dict[Setting, Plan[S]]:
    """The settings that ``labels`` name (see :func:`setting_label`), with as many meta-steps (at least one) as take
    ``target_seconds`` (another method's training time) at the pace measured in ``seconds`` for ``plans``:
    steps x target / seconds, validation checks included. Training seconds are kept to 0.1 s
    (:func:`metalearn.study.experiment.fit`), so a run faster than that counts as 0.1 s."""
    named = {setting_label(k): k for k in plans}
    unknown = sorted(set(labels) - set(named))
    if unknown:
        raise ValueError(f"no setting {unknown}; the settings are {sorted(named)}")
    steps = {}
    for label in labels:
        k = named[label]
        if not (seconds[k] >= 0 and target_seconds[k] >= 0):
            raise ValueError(f"{label}: training times must be seconds >= 0, got {seconds[k]} and {target_seconds[k]}")
        steps[label] = max(1, round(plans[k].steps * target_seconds[k] / max(seconds[k], 0.1)))
    return with_steps(plans, steps)


def paired_by_setting(ours: Mapping[Setting, EvalResult], reference: Mapping[Setting, EvalResult],
                      ) -> dict[Setting, PairedDifference]:
    """Ours − reference on the same test episodes, for each of our settings."""
    return {k: paired_difference(r, reference[k]) for k, r in ours.items()}


def difference_column(differences: Mapping[Setting, PairedDifference], keys: Sequence[Setting]) -> list[str]:
    """A table column: ``"+1.23 ± 0.45"`` for each of ``keys``, ``"–"`` where ``differences`` has none."""
    return [f"{differences[k].mean:+.2f} ± {differences[k].ci95:.2f}" if k in differences else "–" for k in keys]


@dataclass(frozen=True)
class Selection:
    """Model selection on validation classes: every ``every`` meta-steps, the accuracy after adaptation (the plan's
    test-time rule) on ``episodes`` fixed episodes of ``val_sets[dataset]`` with the model's ways and training shots
    and :func:`~metalearn.gradient.evaluation.protocol_queries` per class; the run ends with its best check."""

    val_sets: Mapping[str, ClassDataset]
    episodes: int
    every: int


def _training_inputs(plan: Plan[Any], setting: Setting, train_sets: Mapping[str, ClassDataset],
                     selection: Selection | None) -> tuple[Callable[[], Classifier], EpisodeSampler, Validation | None]:
    """What a setting's meta-training runs on: a maker of its network (:func:`finn_network`, on the data's
    device), its training episodes (the plan's training shots and queries) and, with ``selection``, its validation
    checks under the plan's test-time rule."""
    dataset, ways, shots = setting
    data, k = train_sets[dataset], plan.train_shots or shots
    shape = cast(tuple[int, int, int], tuple(data.images.shape[2:]))
    validation = None
    if selection is not None:
        val_sampler = EpisodeSampler(selection.val_sets[dataset], ways, k,
                                     protocol_queries(plan.rule.protocol, k, plan.test_queries))
        validation = Validation(val_sampler, adapted_predictor(plan.rule), episodes=selection.episodes,
                                every=selection.every)
    return (lambda: finn_network(dataset, shape, ways).to(data.device),
            EpisodeSampler(data, ways, k, plan.train_queries or k), validation)


def fit_meta_models(method: str, plans: Mapping[Setting, Plan[S]], train_sets: Mapping[str, ClassDataset],
                    train_fn: Trainer[S], context: FitContext, selection: Selection | None = None, *,
                    seed: int | None = None) -> tuple[dict[Setting, Classifier], pd.DataFrame, dict[Setting, float]]:
    """Meta-train one classifier (:func:`~metalearn.gradient.networks.finn_network`) per setting with ``train_fn``
    (the method's entry point, e.g. :func:`~metalearn.gradient.fomaml.train_fomaml`) and its plan's settings, as
    they are; or one model per group of settings whose plan trains on ``train_shots``. With ``selection``, each run
    keeps its best check on validation classes under the plan's test-time rule. Return the models, the training
    curves (with ``dataset`` and ``setting`` columns: the training tasks') and the training seconds, by setting.
    ``context``: see :func:`metalearn.study.experiment.fit`. ``seed``: a training seed other than the context's
    (its own initial network and training episodes), whose models are named ``<method>-<setting>-seed<seed>``."""
    inputs = {k: _training_inputs(p, k, train_sets, selection) for k, p in plans.items()}  # before any work
    seed = context.seed if seed is None else seed
    tag, context = ("" if seed == context.seed else f"-seed{seed}"), replace(context, seed=seed)
    trained: dict[Setting, tuple[Classifier, float]] = {}
    models, curves, seconds = {}, [], {}
    for (dataset, ways, shots), p in plans.items():
        key = (dataset, ways, p.train_shots or shots)
        if key not in trained:
            make_model, sampler, validation = inputs[(dataset, ways, shots)]
            torch.manual_seed(seed)
            model = make_model()
            curve, sec = fit(f"{method}-{dataset}-{ways}w{key[2]}s{tag}", model, sampler, p.steps, train_fn,
                             p.settings, context, validation)
            trained[key] = model, sec
            curves.append(curve.assign(dataset=dataset, setting=f"{ways}w{key[2]}s"))
        models[(dataset, ways, shots)], seconds[(dataset, ways, shots)] = trained[key]
    return models, pd.concat(curves), seconds


def fit_meta_budgets(method: str, plan: Plan[S], setting: Setting, train_sets: Mapping[str, ClassDataset],
                     train_fn: Trainer[S], budgets: Mapping[int, int], seeds: Sequence[int], context: FitContext,
                     selection: Selection | None = None) -> Fits:
    """A setting's equal-compute checkpoints (:func:`metalearn.study.equal_compute.fit_budgets`): one run per
    training seed of the plan's meta-training, on the inputs :func:`fit_meta_models` trains that setting on, with its
    checkpoint at every budget (``{budget: steps}``)."""
    make_model, sampler, validation = _training_inputs(plan, setting, train_sets, selection)
    dataset, ways, shots = setting
    return fit_budgets(f"{method}-{dataset}-{ways}w{shots}s-budget", make_model, sampler, budgets, seeds, train_fn,
                       plan.settings, context, validation)


Fitted = tuple[dict[Setting, Classifier], pd.DataFrame, dict[Setting, float]]  # fit_meta_models's models, curves, s
Scored = dict[str, dict[Setting, EvalResult]]  # evaluate_adapted's results: {row: {setting: result}}


@dataclass(frozen=True)
class SeedRun:
    """What a further training seed re-trains of one method: the ``plans`` of some settings, the method's trainer,
    the context it fits in (another chapter's, read-only, for the models that chapter trains) and its model
    selection (as the chapter's own models of the method)."""

    plans: Mapping[Setting, Plan[Any]]
    train_fn: Trainer[Any]
    context: FitContext
    selection: Selection | None = None


def fit_seeds(runs: Mapping[str, SeedRun], seeds: Sequence[int], chapter_seed: int,
              train_sets: Mapping[str, ClassDataset]) -> dict[int, dict[str, Fitted]]:
    """Every method of ``runs`` re-trained at each seed of ``seeds`` but the chapter's (:func:`fit_meta_models` with
    ``seed``): ``{seed: {method: (models, curves, seconds)}}``."""
    return {s: {m: fit_meta_models(m, r.plans, train_sets, r.train_fn, r.context, r.selection, seed=s)
                for m, r in runs.items()} for s in seeds if s != chapter_seed}


def score_seeds(notebook: str, fits: Mapping[int, Mapping[str, Fitted]], runs: Mapping[str, SeedRun],
                test_sets: Mapping[str, ClassDataset], *, episodes: int, seed: int, shared_queries: int | None,
                own: Sequence[str], **common: Any) -> tuple[dict[int, Scored], list[dict]]:
    """:func:`fit_seeds`'s models scored on the chapter's test episodes (``seed`` draws them, as for the chapter's
    own models, so that every seed meets the same episodes): ``{training seed: {row: {setting: result}}}``, and the
    results rows of the methods in ``own`` (those this chapter writes; another chapter writes its own models' rows),
    each with its training seed; ``common``: see :func:`result_rows`."""
    scored: dict[int, Scored] = {}
    rows: list[dict] = []
    for s, fitted in fits.items():
        scored[s] = {}
        for method, (models, curves, seconds) in fitted.items():
            plans = runs[method].plans
            res = evaluate_adapted(method, models, plans, test_sets, episodes=episodes, seed=seed,
                                   shared_queries=shared_queries)
            scored[s] |= res
            if method in own:
                rows += result_rows(notebook, res, seconds, curves=setting_curves(curves, plans), seed=s, **common)
    return scored, rows


def by_seed(scored: Mapping[int, Mapping[str, Mapping[Setting, EvalResult]]], row: str, setting: Setting,
            ) -> dict[int, EvalResult]:
    """One row's results in one setting, ``{training seed: result}``, over the seeds that scored it (for
    :func:`metalearn.study.seeds.paired_over_seeds`)."""
    return {s: by_row[row][setting] for s, by_row in sorted(scored.items()) if setting in by_row.get(row, {})}


def evaluate_adapted(method: str, models: Mapping[Setting, torch.nn.Module], plans: Mapping[Setting, Plan[Any]],
                     test_sets: Mapping[str, ClassDataset], *, episodes: int, seed: int,
                     shared_queries: int | None = None, tasks_per_batch: int = TASKS_PER_BATCH,
                     ) -> dict[str, dict[Setting, EvalResult]]:
    """Each model adapted once on the support set of each of ``episodes`` seeded test episodes by its plan's
    test-time rule, and that one adaptation scored in every row (:func:`metalearn.gradient.evaluation.evaluate`):
    ``method`` (Nichol et al.'s protocol, the first query of each class), ``f"{method}_transductive"`` (the first
    K, or the plan's ``test_queries``, of each class, transductive) and, with ``shared_queries`` = Q,
    ``f"{method}_transductive_{Q}q"`` (all Q queries per class of the study's shared test episodes, which the
    summary pairs with the other chapters'). Every method scored with the same ways, shots, queries and seed sees
    the same episodes."""
    suffixes = ["", "_transductive"] + ([f"_transductive_{shared_queries}q"] if shared_queries is not None else [])
    rows: dict[str, dict[Setting, EvalResult]] = {method + s: {} for s in suffixes}
    for key, model in models.items():
        (dataset, ways, shots), p = key, plans[key]
        per_row = evaluate(model, p.rule, test_sets[dataset], ways, shots, test_queries=p.test_queries,
                           shared_queries=shared_queries, episodes=episodes, seed=seed, tasks_per_batch=tasks_per_batch)
        for suffix, per_episode in per_row.items():
            rows[method + suffix][key] = EvalResult(*mean_ci95(per_episode), episodes, per_episode)
    return rows


def training_seconds(*fitted: tuple[Mapping[Setting, torch.nn.Module], Mapping[Setting, float]]) -> float:
    """The training seconds of the distinct models of one or more ``(models, seconds)`` pairs (a model serving
    several settings counts once)."""
    return sum({id(m): seconds[k] for models, seconds in fitted for k, m in models.items()}.values())


def evaluation_speedup(models: Mapping[Setting, torch.nn.Module], plans: Mapping[Setting, Plan[Any]],
                       test_sets: Mapping[str, ClassDataset], *, episodes: int, seed: int,
                       shared_queries: int) -> pd.DataFrame:
    """The evaluation of :func:`evaluate_adapted` timed side by side, in one run, on the same ``episodes`` episodes
    of each setting: the loop it replaces (each row's own adaptation of each episode, one episode at a time: three
    adaptations per episode) against one adaptation per episode scoring every row, by the fastest path
    (:class:`~metalearn.gradient.evaluation.Adapted`: the lean engine in worker processes on a CPU, task-batched
    passes on a GPU). One row per setting: ``loop s``, ``one pass s``, the ``path`` and ``evaluation_speedup`` (loop
    seconds / one-pass seconds)."""
    records = []
    for key, model in models.items():
        (dataset, ways, shots), p = key, plans[key]
        own = protocol_queries("transductive", shots, p.test_queries)
        queries = max(own, shared_queries)
        sampler = EpisodeSampler(test_sets[dataset], ways, shots, queries)
        ep = sampler.sample(episodes, make_generator(seed, sampler.dataset.device))
        first = {q: first_queries(ways, queries, q, ep.query_x.device) for q in (NICHOL_QUERIES, own, queries)}
        views = [("nichol", first[NICHOL_QUERIES]), ("transductive", first[own]), ("transductive", first[queries])]
        learner = Adapted(model, p.rule)
        start = time.perf_counter()
        for view in views:  # the loop: every row adapts every episode again
            learner.views_per_task(ep.support_x, ep.support_y, ep.query_x, [view])
        loop = time.perf_counter() - start
        start = time.perf_counter()
        learner.views(ep.support_x, ep.support_y, ep.query_x, views)
        one_pass = time.perf_counter() - start
        records.append({"setting": setting_label(key), "episodes": episodes, "loop s": round(loop, 2),
                        "one pass s": round(one_pass, 2), "path": learner.path(ep.support_x),
                        "evaluation_speedup": loop / one_pass})
    return pd.DataFrame(records)


def setting_curves(curves: pd.DataFrame, plans: Mapping[Setting, Plan[Any]]) -> dict[Setting, pd.DataFrame]:
    """The training curve of the model that serves each setting of ``plans``, from :func:`fit_meta_models`'s curves
    (a model trained on ``train_shots`` serves the group's other shots)."""
    out = {}
    for (dataset, ways, shots), p in plans.items():
        trained = f"{ways}w{p.train_shots or shots}s"
        out[(dataset, ways, shots)] = curves[(curves["dataset"] == dataset) & (curves["setting"] == trained)]
    return out


def result_rows(notebook: str, res: Mapping[str, Mapping[Setting, EvalResult]], seconds: Mapping[Setting, float], *,
                curves: Mapping[Setting, pd.DataFrame], **common: Any) -> list[dict]:
    """The results rows of :func:`evaluate_adapted`'s results, each (method, setting) with its model's budget and
    validation row (:func:`metalearn.study.experiment.scored_rows`; ``curves``: see :func:`setting_curves`);
    ``common``: the keyword arguments of :func:`metalearn.core.results.row` that all of them share, e.g. scale,
    device, seed."""
    return [r for method, by_setting in res.items() for k, result in by_setting.items()
            for r in scored_rows(notebook, method, k, result, curves[k], seconds[k], **common)]


def plan_table(plans: Mapping[Setting, Plan[Any]]) -> pd.DataFrame:
    """One row per setting: its budget, task shapes, inner loop and test-time rule, as the notebook set them."""
    return pd.DataFrame({setting_label(k): {
        "meta-steps": p.steps, "tasks": p.settings.tasks, "inner steps": p.settings.inner_steps,
        "inner lr": p.settings.inner_lr, "test steps": p.rule.steps, "test lr": p.rule.lr,
        "test minibatch": p.rule.minibatch, "protocol": p.rule.protocol, "train shots": p.train_shots,
        "train queries": p.train_queries, "test queries": p.test_queries} for k, p in plans.items()}).T
