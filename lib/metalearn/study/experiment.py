"""Notebook glue shared by the method chapters: train a named model (resumable), evaluate each
(model, setting) once on the fixed test episodes, compare with the papers' numbers (a table and its one-line-per-
setting summary), and measure the drop under task shift (a table and its results rows)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pandas as pd
from torch import nn

from metalearn.core.episodes import ClassDataset, EpisodeSampler
from metalearn.core.evaluate import EvalResult, PairedDifference, Validation, evaluate, mean_ci95, paired_difference
from metalearn.core.model_store import ModelKey, ModelStore, describe_model, model_key
from metalearn.core.results import read_episodes, row
from metalearn.core.stats import log_budget_fit
from metalearn.core.train import RunOptions, Trainer, TrainResult
from metalearn.datasets.task_shift import as_cifar_format, as_omniglot_format
from metalearn.metric.episodic import predictor

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

S = TypeVar("S", bound="DataclassInstance")  # a trainer's settings dataclass
Data = EpisodeSampler | ClassDataset  # what a fit trains on: episodes, or a class dataset (pre-training, pairs)


@dataclass(frozen=True)
class FitContext:
    """Where a chapter's fits live: the chapter (``notebook``), its seed, the folder of unfinished runs' resume
    state (``checkpoint_dir``; "": none) and of trained models (``models_dir``; "": none, smoke scale), and whether
    the models must already be there (``read_only``: another chapter's models)."""

    notebook: str
    seed: int
    checkpoint_dir: str = ""
    models_dir: str = ""
    read_only: bool = False


def _fit_key(name: str, model: nn.Module, data: Data, steps: int, train_fn: Trainer[S], settings: S,
             context: FitContext, validation: Validation | None) -> tuple[ModelKey, str]:
    """A fit's model key (its configuration and the source it runs) and a few words on its data."""
    if not is_dataclass(settings):
        raise TypeError(f"{name}: settings must be the trainer's settings dataclass, got {type(settings).__name__}")
    if isinstance(data, EpisodeSampler):
        what = f"{data.dataset.name}, {data.ways}-way {data.shots}-shot {data.queries}-query episodes"
        contents = data.dataset.digest
    elif isinstance(data, ClassDataset):
        what, contents = data.name, data.digest
    else:  # generated tasks (e.g. sinusoids): their settings are the data
        what, contents = data.name, {k: v for k, v in sorted(vars(data).items()) if not k.startswith("_")}
    selection = {"validation": validation.describe()} if validation is not None else {}
    config = dict(name=name, data=what, data_contents=contents, steps=steps, seed=context.seed,
                  model=describe_model(model), trainer=f"{train_fn.__module__}.{train_fn.__qualname__}",
                  settings={"type": f"{type(settings).__module__}.{type(settings).__qualname__}", **asdict(settings)},
                  **selection)
    objects = (train_fn, model, data, type(settings), *([validation.predict] if validation else []))
    return model_key(config, *objects), what


def fit(name: str, model: nn.Module, data: Data, steps: int, train_fn: Trainer[S], settings: S,
        context: FitContext, validation: Validation | None = None) -> tuple[pd.DataFrame, float]:
    """Train ``model`` for ``steps`` steps with ``train_fn(model, data, steps, settings, run)`` (the method's
    trainer and its settings dataclass, e.g. ``train_episodic`` and ``Episodic(lr=1e-3)``), or reuse it; return its
    curve and training seconds.

    The curve has one row per logged step: ``model`` (= ``name``), ``step``, ``seconds`` (training seconds so far),
    the training ``loss`` (and ``accuracy`` where logged) and, with ``validation``, ``val_accuracy`` at its checks;
    the model then ends with the weights of its best check (selection on validation classes).

    With ``context.models_dir``, the final weights are kept in ``<models_dir>/<notebook>/<name>.pt`` and reused while
    the model's key (configuration and settings, source of the modules the fit imports, torch version) is unchanged;
    with ``context.read_only`` they must be there (another notebook's models). With ``context.checkpoint_dir``, an
    unfinished run resumes from its state there. One line says whether the model was reused, resumed or trained, and
    why.
    """
    key, what = _fit_key(name, model, data, steps, train_fn, settings, context, validation)
    store = ModelStore(context.models_dir, context.notebook) if context.models_dir else None
    why = "no models folder set (smoke scale)"
    if store is not None:
        record, why = store.load(name, model, key)
        if record is not None:
            model.eval()  # as a trained model is returned
            print(f"{name}: reused {store.weights(name)} ({record['steps']} steps, key {key.digest[:12]} unchanged)")
            return _curve(name, record["history"], record.get("validation", [])), record["seconds"]
        if context.read_only:
            raise FileNotFoundError(f"{name}: {why}; the model must come from chapter {context.notebook} at this "
                                    f"scale with the same settings (dvc repro {context.notebook}, or make paper)")
    ckpt = (Path(context.checkpoint_dir) / f"{context.notebook}-{name}-{key.digest[:16]}.pt"
            if context.checkpoint_dir else None)
    action = "resuming its unfinished run" if ckpt is not None and ckpt.exists() else "training"
    print(f"{name}: {action} ({why})")
    run = RunOptions(seed=context.seed, checkpoint=ckpt, log_every=max(1, steps // 40), validate=validation,
                     validate_every=validation.every if validation is not None else 0, desc=name)
    res = train_fn(model, data, steps, settings, run)
    if store is not None:
        store.save(name, model, key, steps, res)
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)  # finished: the stored weights replace the resume state
    chosen = (f"; kept step {res.best_step} ({max(v['val_accuracy'] for v in res.validation):.2f}% on validation "
              "episodes)" if res.best_step is not None else "")
    print(f"{name}: {steps} steps on {what} in {res.seconds:.0f} s{chosen}"
          + (f" (resumed at {res.resumed_from})" if res.resumed_from else "")
          + (f", saved to {store.weights(name)}" if store is not None else ""))
    return _curve(name, res.history, res.validation), round(res.seconds, 1)


def fit_snapshots(name: str, model: nn.Module, data: Data, snapshots: Sequence[int], train_fn: Trainer[S],
                  settings: S, context: FitContext, validation: Validation | None = None,
                  ) -> dict[int, tuple[nn.Module, pd.DataFrame, float]]:
    """Checkpoints of one run at several budgets (the families at equal compute): train ``model`` as :func:`fit`
    for ``max(snapshots)`` steps and keep, at each step of ``snapshots``, the weights a run stopped there would end
    with (its best validated check so far, or its current weights). Returns ``{step: (model with those weights, the
    run's curve up to that step, its training seconds up to that step)}``.

    With ``context.models_dir``, each checkpoint is stored as the model ``<name>@<step>`` (its key: the run's key
    and the step) and reused while every one of them is unchanged; otherwise the run trains (or resumes)."""
    steps = sorted(snapshots)
    if not steps or steps[0] < 1 or len(set(steps)) != len(steps):
        raise ValueError(f"{name}: snapshots must be distinct steps >= 1, got {list(snapshots)}")
    key, what = _fit_key(name, model, data, steps[-1], train_fn, settings, context, validation)
    keys = {s: ModelKey(key.config | {"snapshot": s}, key.sources, key.torch) for s in steps}
    store = ModelStore(context.models_dir, context.notebook) if context.models_dir else None
    holders = {s: copy.deepcopy(model) for s in steps}  # the same architecture, to hold each checkpoint's weights
    why = "no models folder set (smoke scale)"
    if store is not None:
        records: dict[int, dict[str, Any]] = {}
        for s in steps:
            record, why = store.load(f"{name}@{s}", holders[s], keys[s])
            if record is None:
                break
            records[s] = record
        else:
            print(f"{name}: reused its checkpoints at steps {', '.join(map(str, steps))} from {store.folder}")
            return {s: (holders[s].eval(), _curve(f"{name}@{s}", r["history"], r.get("validation", [])), r["seconds"])
                    for s, r in records.items()}
        if context.read_only:
            raise FileNotFoundError(f"{name}: {why}; the checkpoints must come from chapter {context.notebook}")
    ckpt = (Path(context.checkpoint_dir) / f"{context.notebook}-{name}-{key.digest[:16]}.pt"
            if context.checkpoint_dir else None)
    print(f"{name}: {'resuming' if ckpt is not None and ckpt.exists() else 'training'} a run of {steps[-1]} steps on "
          f"{what} with checkpoints at steps {', '.join(map(str, steps))} ({why})")
    run = RunOptions(seed=context.seed, checkpoint=ckpt, log_every=max(1, steps[-1] // 40), validate=validation,
                     validate_every=validation.every if validation is not None else 0, desc=name,
                     snapshots=tuple(steps))
    res = train_fn(model, data, steps[-1], settings, run)
    out = {}
    for s in steps:
        snap = res.snapshots[s]
        holders[s].load_state_dict(snap["state"])
        upto = TrainResult([h for h in res.history if h["step"] <= s], snap["seconds"], res.resumed_from,
                           [v for v in res.validation if v["step"] <= s], snap["best_step"])
        if store is not None:
            store.save(f"{name}@{s}", holders[s], keys[s], s, upto)
        out[s] = (holders[s].eval(), _curve(f"{name}@{s}", upto.history, upto.validation), round(upto.seconds, 1))
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    print(f"{name}: {steps[-1]} steps in {res.seconds:.0f} s; checkpoints "
          + ", ".join(f"{s} ({out[s][2]:.0f} s)" for s in steps))
    return out


def budget(curve: pd.DataFrame, seconds: float) -> dict[str, Any]:
    """The training budget of the run(s) in ``curve`` (one :func:`fit`'s, or the two of a :func:`fit_refit`) as the
    keyword arguments of :func:`metalearn.core.results.row`: ``train_steps`` and ``train_examples`` (the
    deterministic unit) summed over its models' last training rows, and the measured ``seconds``."""
    if "examples" not in curve:
        raise ValueError("the curve has no examples column: it comes from a model trained before budgets were logged; "
                         "re-run its chapter")
    last = curve.dropna(subset=["loss"]).groupby("model")[["step", "examples"]].max()
    return {"train_seconds": seconds, "train_steps": int(last["step"].sum()),
            "train_examples": int(last["examples"].sum())}


def scored_rows(notebook: str, method: str, setting: tuple[str, int | None, int | None], result: EvalResult,
                curve: pd.DataFrame, seconds: float, *, scale: str, device: str, seed: int, metric: str = "accuracy",
                **qualifiers: Any) -> list[dict]:
    """The results rows of one model's test ``result`` in ``setting``: the test row, with the model's budget
    (:func:`budget` of its ``curve`` and training ``seconds``), and, where the curve has validation checks, the
    ``val_<metric>`` row: the score of the check the model ends with (its best), on which "the family's best" is
    chosen, never on the test row."""
    dataset, ways, shots = setting
    common = dict(scale=scale, device=device, seed=seed, **budget(curve, seconds), **qualifiers)
    rows = [row(notebook, method, dataset, ways, shots, metric, result.mean, result.ci95, result.n, **common)]
    if "val_accuracy" in curve and curve["val_accuracy"].notna().any():
        rows.append(row(notebook, method, dataset, ways, shots, f"val_{metric}", float(curve["val_accuracy"].max()),
                        **common))
    return rows


def _curve(name: str, history: list[dict], validation: list[dict]) -> pd.DataFrame:
    """Training rows and validation checks in one table, one row per step (columns missing at a step are NaN)."""
    curve = pd.DataFrame(history)
    if validation:
        curve = pd.concat([curve, pd.DataFrame(validation)]).groupby("step", as_index=False, sort=True).first()
    return curve.assign(model=name)


def fit_refit(name: str, make_model: Callable[[Data], nn.Module], data: Data, refit_data: Data, steps: int,
              train_fn: Trainer[S], settings: S, context: FitContext, validation: Validation,
              ) -> tuple[nn.Module, pd.DataFrame, float, int]:
    """Snell et al.'s protocol: choose the training length on validation classes, then re-train on train + val.

    1. ``<name>-selection``: ``make_model(data)`` trains on ``data`` (the train classes) for ``steps`` steps, scored
       by ``validation`` (episodes of the validation classes); its best check gives the length ``T``.
    2. ``<name>``: ``make_model(refit_data)`` (the same initial weights, where the shapes allow: ``make_model``
       seeds itself) trains on ``refit_data`` (train + val classes) for ``T`` steps with the same recipe (a cosine
       schedule then anneals over ``T``). No test class is ever seen.

    Return the final model, both runs' curves (the selection's carries ``val_accuracy``), their training seconds
    together, and ``T``. Both runs are :func:`fit` with ``train_fn``, ``settings`` and ``context``."""
    curve_sel, sec_sel = fit(f"{name}-selection", make_model(data), data, steps, train_fn, settings, context,
                             validation)
    chosen = int(curve_sel.loc[cast(Any, curve_sel["val_accuracy"].idxmax()), "step"])  # the first best, as in train()
    model = make_model(refit_data)
    curve, sec = fit(name, model, refit_data, chosen, train_fn, settings, context)
    return model, pd.concat([curve_sel, curve], ignore_index=True), round(sec_sel + sec, 1), chosen


class Evaluator:
    """Accuracy of a model on the fixed test episodes of a setting, computed once per (model, setting)."""

    def __init__(self, test_sets: dict[str, ClassDataset], episodes: dict[str, int], queries: int, seed: int,
                 chunk: int | None = None) -> None:
        self.test_sets, self.episodes, self.queries, self.seed = test_sets, episodes, queries, seed
        self.chunk = chunk  # tasks per forward pass (memory); the episodes do not depend on it
        self._cache: dict[tuple, EvalResult] = {}

    def __call__(self, model: nn.Module, dataset: str, ways: int, shots: int, test_data: ClassDataset | None = None,
                 transductive: bool = False) -> EvalResult:
        """Accuracy of ``model`` (non-transductive BatchNorm unless ``transductive``; see
        :func:`metalearn.metric.episodic.predictor`) on the setting's test episodes, or on ``test_data``'s."""
        key = (id(model), dataset, ways, shots, id(test_data), transductive)
        if key not in self._cache:
            sampler = EpisodeSampler(test_data or self.test_sets[dataset], ways, shots, self.queries)
            result = evaluate(predictor(model, transductive), sampler, episodes=self.episodes[dataset], seed=self.seed,
                              chunk=self.chunk)
            self._cache[key] = cast(EvalResult, result)  # predictor predicts labels, not a dict of them
        return self._cache[key]

    def against(self, result: EvalResult, episodes_file: str | Path, method: str, dataset: str, ways: int,
                shots: int) -> PairedDifference:
        """``result`` minus another chapter's ``method`` (its model of training seed ``self.seed``, the chapter's seed)
        on the very same test episodes, read from its :func:`metalearn.core.results.write_episodes` file (checked to
        be drawn like ours): the paired difference."""
        other = read_episodes(Path(episodes_file), method, dataset, ways, shots, seed=self.seed,
                              episode_seed=self.seed, queries=self.queries, data=self.test_sets[dataset].digest)
        if len(other) != result.n:
            raise ValueError(f"{episodes_file} holds {len(other)} {dataset} test episodes of {method}, this chapter "
                             f"{result.n}: set this chapter's test episodes for {dataset} to {len(other)} to pair them")
        return paired_difference(result, EvalResult(*mean_ci95(other), len(other), other))


@dataclass(frozen=True)
class Reference:
    """A published number with the protocol it was measured under. ``comparable=False`` when that protocol differs
    from ours in a way that moves the number (another backbone, transductive BatchNorm, checkpoints chosen on
    test): the row then reads "not comparable", never "missed" or "within"."""

    value: float
    protocol: str = ""
    comparable: bool = True


def paper_comparison(results: dict[tuple[str, int, int], EvalResult],
                     paper: dict[tuple[str, int, int], float | Reference],
                     allowed_gap: dict[tuple[str, int], float], protocol: str = "") -> pd.DataFrame:
    """One row per setting: ours ± CI and our ``protocol``, the paper's number and protocol, the gap, and whether it
    is within the allowed gap (None without a target, or when the paper's number is not comparable)."""
    rows = []
    for (dataset, ways, shots), r in results.items():
        ref = paper.get((dataset, ways, shots))
        ref = Reference(ref) if isinstance(ref, int | float) else ref
        gap = None if ref is None else round(ref.value - r.mean, 2)
        allowed = allowed_gap.get((dataset, ways))
        comparable = ref is not None and ref.comparable
        rows.append({"dataset": dataset, "setting": f"{ways}w{shots}s", "ours": f"{r.mean:.2f} ± {r.ci95:.2f}",
                     "our protocol": protocol, "paper": None if ref is None else ref.value,
                     "paper protocol": None if ref is None else ref.protocol, "comparable": comparable,
                     "gap": gap, "allowed gap": allowed,
                     "met": None if gap is None or allowed is None or not comparable else gap <= allowed})
    return pd.DataFrame(rows)


def paper_summary(comparison: pd.DataFrame, method: str = "", *, ours: str = "ours",
                  extra: Sequence[str] = ()) -> str:
    """One line per row of a :func:`paper_comparison` table (which may carry a ``method`` column and more): the
    method, data set and setting, our accuracy labelled ``ours`` (e.g. ``"transductive"``), the ``extra`` columns
    (text as it is, numbers as signed differences), then the paper's number, the gap and the verdict: ``within the
    2.0-point target``, ``MISSED by 1.3 points beyond the 2.0-point target``, ``not comparable (<the paper's
    protocol>)``, ``no target`` or ``no paper number``."""
    records = comparison.to_dict("records")
    names = [rec.get("method", method) for rec in records]
    width = max(map(len, names), default=0)
    lines = []
    for name, rec in zip(names, records, strict=True):
        cells = [f"{ours} {rec['ours']}"] + [
            f"{c} {rec[c] if isinstance(rec[c], str) else '–' if pd.isna(rec[c]) else format(rec[c], '+.2f')}"
            for c in extra]
        if pd.isna(rec["paper"]):
            verdict = "no paper number"
        elif not rec.get("comparable", True):
            verdict = f"paper {rec['paper']}, gap {rec['gap']:+.2f}: not comparable ({rec['paper protocol']})"
        elif pd.isna(rec["met"]):
            verdict = f"paper {rec['paper']}, gap {rec['gap']:+.2f}, no target"
        else:
            status = "within" if rec["met"] else f"MISSED by {rec['gap'] - rec['allowed gap']:.1f} points beyond"
            verdict = f"paper {rec['paper']}, gap {rec['gap']:+.2f}: {status} the {rec['allowed gap']}-point target"
        lines.append(f"{name:{width}s} {rec['dataset']:8s} {rec['setting']}: {', '.join(cells)} | {verdict}")
    return "\n".join(lines)


def validation_episodes(val_set: ClassDataset, shots: int, *, queries: int, episodes: int, every: int, ways: int = 5,
                        predict: Callable[[nn.Module], Any] = predictor) -> Validation:
    """The study's model selection: ``episodes`` fixed ``ways``-way ``shots``-shot episodes of the validation classes,
    scored every ``every`` steps with the method's test-time rule ``predict(model)``."""
    return Validation(EpisodeSampler(val_set, ways, shots, queries), predict, episodes=episodes, every=every)


def against_baseline(evaluate_on: Evaluator, comparison: pd.DataFrame, results: dict[tuple[str, int, int], EvalResult],
                     episodes_file: str | Path, method: str = "nearest_centroid",
                     dataset: str = "cifar_fs") -> dict[tuple[str, int, int], PairedDifference]:
    """Each ``dataset`` result minus chapter 00's ``method`` on the same test episodes (paired); adds the column
    ``"vs ch. 00 centroid (paired)"`` to ``comparison`` (a :func:`paper_comparison` table of ``results``, in order)
    and returns the differences."""
    pairs = {k: evaluate_on.against(r, episodes_file, method, *k) for k, r in results.items() if k[0] == dataset}
    comparison["vs ch. 00 centroid (paired)"] = [
        f"{pairs[k].mean:+.2f} ± {pairs[k].ci95:.2f}" if k in pairs else "–" for k in results]
    return pairs


def extrapolations(comparison: pd.DataFrame, curves: pd.DataFrame, model_for: dict[tuple[str, int, int], str],
                   x: str = "seconds") -> pd.DataFrame:
    """:func:`budget_extrapolation` for every row of a :func:`paper_comparison` table that misses its target and
    whose model (``model_for[(dataset, ways, shots)]``, a name in ``curves``) has a validation curve: one row each
    with the points missing beyond the target, the fitted points per doubling, and the budget it asks for."""
    rows = []
    for rec in comparison.to_dict("records"):
        ways, shots = (int(v) for v in rec["setting"][:-1].split("w"))
        name = model_for.get((rec["dataset"], ways, shots))
        if rec["met"] is not False or name is None:
            continue
        curve = curves[curves["model"] == name]
        missing = rec["gap"] - rec["allowed gap"]
        if "val_accuracy" not in curve or curve["val_accuracy"].notna().sum() < 4:
            continue
        e = budget_extrapolation(curve, missing, x)
        rising = e["rising"]
        rows.append({"setting": f"{rec['dataset']} {rec['setting']}", "model": name,
                     "missing beyond target": round(missing, 2),
                     f"fit window ({x})": f"{e['window'][0]:.3g}–{e['window'][1]:.3g}",
                     "last third, points per doubling": f"{e['slope']:+.2f} ± {e['slope_ci95']:.2f}",
                     "reading": {"rising": "still rising",
                                 "plateau": "plateau: the recipe or protocol, not the budget",
                                 "undetermined": "undetermined: too few or too noisy validation checks"}[e["trend"]],
                     f"trained ({x})": round(e["last"]),
                     f"needed ({x})": f"{e['needed']:.3g}" if rising else "–",
                     "x budget": f"{e['factor']:.3g}" if rising else "–"})
    return pd.DataFrame(rows)


def floor_extrapolations(vs_baseline: dict[tuple[str, int, int], PairedDifference], curves: pd.DataFrame,
                         model_for: dict[tuple[str, int, int], str], x: str = "seconds") -> pd.DataFrame:
    """:func:`extrapolations` with chapter 00's pre-trained nearest centroid as the target (the floor): for each
    setting whose paired difference to it (:func:`against_baseline`) is below 0, the budget the model's validation
    curve asks for to reach it."""
    floor = pd.DataFrame([{"dataset": d, "setting": f"{w}w{s}s", "gap": -diff.mean, "allowed gap": 0.0,
                           "met": diff.mean >= 0} for (d, w, s), diff in vs_baseline.items()])
    return extrapolations(floor, curves, model_for, x)


def budget_extrapolation(curve: pd.DataFrame, gap: float, x: str = "seconds") -> dict[str, Any]:
    """How much more budget a missed target asks for, from a run's validation curve (``val_accuracy`` against ``x``:
    training ``seconds`` or ``step``): :func:`metalearn.core.stats.log_budget_fit` over its checks."""
    checks = curve.dropna(subset=["val_accuracy"])
    checks = checks[checks[x] > 0]
    return log_budget_fit(checks[x].to_numpy(float), checks["val_accuracy"].to_numpy(float), gap)


def task_shift(evaluate_on: Evaluator, method: str, model_for: Callable[[str, int], nn.Module],
               shifted: dict[str, ClassDataset], shots: tuple[int, ...] = (1, 5), ways: int = 5) -> pd.DataFrame:
    """Robustness under task shift: the model trained on one data set (``model_for(dataset, shots)``) is tested
    on the other data set's test classes in its own format (``shifted[evaluated_on]``), and compared with the model
    trained on the test tasks' own data set. One row per (shift, shots), with the :class:`EvalResult` of each."""
    rows = []
    for trained_on, evaluated_on in (("omniglot", "cifar_fs"), ("cifar_fs", "omniglot")):
        for k in shots:
            r = evaluate_on(model_for(trained_on, k), evaluated_on, ways, k, test_data=shifted[evaluated_on])
            native = evaluate_on(model_for(evaluated_on, k), evaluated_on, ways, k)
            rows.append({"method": method, "trained on": trained_on, "tested on": evaluated_on, "ways": ways,
                         "shots": k, "setting": f"{ways}w{k}s", "shift": f"{trained_on}→{evaluated_on}",
                         "model trained on the test set": native.mean, "shifted model": r.mean, "ci95": r.ci95,
                         "drop": native.mean - r.mean, "result": r})
    return pd.DataFrame(rows)


def task_shift_results(notebook: str, evaluate_on: Evaluator, methods: Sequence[str],
                       model_for: Callable[[str, str, int], nn.Module],
                       trained: Callable[[str, str, int], tuple[pd.DataFrame, float]], ways: int = 5,
                       **row_kwargs: Any) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`task_shift` of each of ``methods`` (its model trained on a data set for a number of shots:
    ``model_for(method, trained_on, shots)``) on the evaluator's test sets, each shown in the other data set's image
    format; return the concatenated table and its ``reports/results.csv`` rows (:func:`scored_rows`, ``trained_on``
    set: the model's budget and validation row, from ``trained(method, trained_on, shots)``, its training curve and
    seconds), per shifted model and setting; ``row_kwargs`` (``scale``, ``device``, ``seed``) go to the rows."""
    tests = evaluate_on.test_sets
    shifted = {"cifar_fs": as_omniglot_format(tests["cifar_fs"]), "omniglot": as_cifar_format(tests["omniglot"])}
    table = pd.concat([task_shift(evaluate_on, m, partial(model_for, m), shifted, ways=ways) for m in methods],
                      ignore_index=True)
    rows = [r for rec in table.to_dict("records")
            for r in scored_rows(notebook, rec["method"], (rec["tested on"], rec["ways"], rec["shots"]), rec["result"],
                                 *trained(rec["method"], rec["trained on"], rec["shots"]), trained_on=rec["trained on"],
                                 **row_kwargs)]
    return table, rows
