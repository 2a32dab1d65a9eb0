"""Notebook glue: a named, resumable fit; each (model, setting) evaluated once; the paper comparison."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from metalearn.core.episodes import ClassDataset, EpisodeSampler
from metalearn.core.evaluate import EvalResult, PairedDifference, Validation
from metalearn.core.models import Conv4
from metalearn.metric.episodic import Episodic, predictor, train_episodic
from metalearn.metric.protonet import ProtoNet
from metalearn.study.experiment import (
    Evaluator,
    FitContext,
    Reference,
    budget_extrapolation,
    extrapolations,
    fit,
    fit_refit,
    fit_snapshots,
    floor_extrapolations,
    paper_comparison,
    paper_summary,
    task_shift_results,
)


def test_fit_resumes_and_evaluator_caches(omniglot_train, omniglot_test, tmp_path):
    small = ClassDataset(omniglot_train.images[:30], omniglot_train.class_names[:30])
    sampler = EpisodeSampler(small, 5, 1, 2)
    torch.manual_seed(0)
    model = ProtoNet(Conv4())
    ctx = FitContext("nb", 0, checkpoint_dir=str(tmp_path))
    curve, _ = fit("p", model, sampler, 6, train_episodic, Episodic(), ctx)
    assert list(curve["step"])[-1] == 6 and len(list(tmp_path.glob("nb-p-*.pt"))) == 1
    torch.manual_seed(0)  # the same initial weights: the same key (another seed would be another model)
    again, _ = fit("p", ProtoNet(Conv4()), sampler, 6, train_episodic, Episodic(), ctx)
    assert again.equals(curve)  # finished checkpoint: nothing re-trained, same curve
    calls = []
    evaluator = Evaluator({"omniglot": omniglot_test}, {"omniglot": 4}, queries=2, seed=0)
    original = model.forward
    model.forward = lambda *a: calls.append(1) or original(*a)
    first = evaluator(model, "omniglot", 5, 1)
    assert evaluator(model, "omniglot", 5, 1) is first and len(calls) == 1


def test_paper_comparison():
    res = {("omniglot", 5, 1): EvalResult(97.5, 0.3, 600, np.zeros(600)),
           ("cifar_fs", 5, 1): EvalResult(50.0, 0.8, 600, np.zeros(600))}
    table = paper_comparison(res, {("omniglot", 5, 1): 98.8}, {("omniglot", 5): 2.0})
    assert table.loc[0, "gap"] == 1.3 and bool(table.loc[0, "met"])
    assert pd.isna(table.loc[1, "paper"]) and table.loc[1, "met"] is None


def test_paper_summary_says_within_missed_or_no_number():
    res = {("omniglot", 5, 1): EvalResult(97.5, 0.3, 600, np.zeros(600)),
           ("omniglot", 20, 1): EvalResult(90.0, 0.4, 600, np.zeros(600)),
           ("cifar_fs", 5, 1): EvalResult(50.0, 0.8, 600, np.zeros(600))}
    table = paper_comparison(res, {("omniglot", 5, 1): 98.8, ("omniglot", 20, 1): 95.0}, {("omniglot", 5): 2.0,
                                                                                         ("omniglot", 20): 4.0})
    table["other"], table["diff"] = ["a", "b", "c"], [0.5, -1.25, None]
    lines = paper_summary(table, "protonet", ours="transductive", extra=["other", "diff"]).split("\n")
    assert lines[0] == ("protonet omniglot 5w1s: transductive 97.50 ± 0.30, other a, diff +0.50 | paper 98.8, "
                        "gap +1.30: within the 2.0-point target")
    assert lines[1].endswith("diff -1.25 | paper 95.0, gap +5.00: MISSED by 1.0 points beyond the 4.0-point target")
    assert lines[2].endswith("diff – | no paper number")
    two = paper_summary(pd.concat([table.assign(method="a"), table.assign(method="long_name")]))
    assert two.split("\n")[0].startswith("a         omniglot 5w1s: ours 97.50")  # the table's method column, aligned


def test_task_shift_compares_each_model_with_the_native_one(omniglot_test, cifar_splits):
    from metalearn.core.models import conv4_for
    from metalearn.datasets.task_shift import as_cifar_format, as_omniglot_format
    from metalearn.study.experiment import task_shift

    cifar = ClassDataset.from_numpy(*cifar_splits["test"], name="cifar_fs/test")
    omni = ClassDataset(omniglot_test.images[:40], omniglot_test.class_names[:40], name="omniglot/test")
    evaluator = Evaluator({"omniglot": omni, "cifar_fs": cifar}, {"omniglot": 3, "cifar_fs": 3}, queries=2, seed=0)
    models = {"omniglot": ProtoNet(conv4_for((1, 28, 28))).eval(), "cifar_fs": ProtoNet(conv4_for((3, 32, 32))).eval()}
    shifted = {"cifar_fs": as_omniglot_format(cifar), "omniglot": as_cifar_format(omni)}
    table = task_shift(evaluator, "protonet", lambda dataset, shots: models[dataset], shifted, shots=(1,))
    assert list(table["shift"]) == ["omniglot→cifar_fs", "cifar_fs→omniglot"]
    for rec in table.to_dict("records"):
        native = evaluator(models[rec["tested on"]], rec["tested on"], 5, 1).mean
        assert rec["model trained on the test set"] == native
        assert rec["drop"] == native - rec["shifted model"] and rec["result"].n == 3


def test_task_shift_results_give_one_row_per_shifted_model(omniglot_test, cifar_splits):
    from metalearn.core.models import conv4_for

    cifar = ClassDataset.from_numpy(*cifar_splits["test"], name="cifar_fs/test")
    omni = ClassDataset(omniglot_test.images[:40], omniglot_test.class_names[:40], name="omniglot/test")
    evaluator = Evaluator({"omniglot": omni, "cifar_fs": cifar}, {"omniglot": 2, "cifar_fs": 2}, queries=2, seed=0)
    models = {(m, d): ProtoNet(conv4_for((1, 28, 28) if d == "omniglot" else (3, 32, 32))).eval()
              for m in ("p", "q") for d in ("omniglot", "cifar_fs")}
    def trained(m, d, k):  # a curve with a validation check for "p" only
        curve = pd.DataFrame({"model": m, "step": [10 * k], "examples": [100 * k], "loss": [1.0]})
        return (curve.assign(val_accuracy=50.0 + k) if m == "p" else curve), {"p": 1.0, "q": 2.0}[m] + k

    table, rows = task_shift_results("nb", evaluator, ["p", "q"], lambda m, d, k: models[(m, d)], trained,
                                     scale="smoke", device="cpu", seed=3)
    test = [r for r in rows if r["metric"] == "accuracy"]
    assert len(table) == len(test) == 8 and list(table.index) == list(range(8))
    assert [(r["method"], r["trained_on"], r["dataset"], r["shots"]) for r in test[:2]] == [
        ("p", "omniglot", "cifar_fs", 1), ("p", "omniglot", "cifar_fs", 5)]
    assert [r["train_seconds"] for r in test] == [2.0, 6.0, 2.0, 6.0, 3.0, 7.0, 3.0, 7.0]
    assert [r["train_examples"] for r in test] == [100, 500] * 4
    assert all(r["value"] == rec["shifted model"] and r["n_test"] == 2 and r["seed"] == 3
               for r, rec in zip(test, table.to_dict("records"), strict=True))
    val = [r for r in rows if r["metric"] == "val_accuracy"]
    assert [(r["method"], r["value"], r["trained_on"]) for r in val[:2]] == [("p", 51.0, "omniglot"),
                                                                             ("p", 55.0, "omniglot")]
    assert {r["method"] for r in val} == {"p"}


def test_fit_with_validation_is_stored_and_reused(omniglot_train, omniglot_test, tmp_path, capsys):
    small = ClassDataset(omniglot_train.images[:30], omniglot_train.class_names[:30], "small")
    val = Validation(EpisodeSampler(omniglot_test, 5, 1, 2), predictor, episodes=6, every=2)
    torch.manual_seed(0)
    model = ProtoNet(Conv4())
    ctx = FitContext("nb", 0, models_dir=str(tmp_path))
    curve, _ = fit("p", model, EpisodeSampler(small, 5, 1, 2), 6, train_episodic, Episodic(), ctx, val)
    checks = curve.dropna(subset=["val_accuracy"])
    assert list(checks["step"]) == [2, 4, 6] and "kept step" in capsys.readouterr().out
    record = json.loads((tmp_path / "nb" / "p.json").read_text())
    assert record["best_step"] == int(checks.loc[checks["val_accuracy"].idxmax(), "step"])
    assert record["config"]["validation"]["contents"] == omniglot_test.digest
    torch.manual_seed(0)
    again, _ = fit("p", ProtoNet(Conv4()), EpisodeSampler(small, 5, 1, 2), 6, train_episodic, Episodic(), ctx, val)
    assert "reused" in capsys.readouterr().out and again.equals(curve)
    torch.manual_seed(0)  # other validation episodes: another selection, another model
    fit("p", ProtoNet(Conv4()), EpisodeSampler(small, 5, 1, 2), 6, train_episodic, Episodic(), ctx,
        Validation(val.sampler, predictor, episodes=8, every=2))
    assert "validation.episodes changed" in capsys.readouterr().out
    with pytest.raises(TypeError, match="settings must be the trainer's settings dataclass"):
        fit("p", ProtoNet(Conv4()), EpisodeSampler(small, 5, 1, 2), 6, train_episodic, {"lr": 1e-3}, ctx)


def test_fit_snapshots_are_the_fits_of_their_lengths_stored_and_reused(omniglot_train, omniglot_test, tmp_path,
                                                                       capsys):
    """One run's checkpoints at steps 3 and 6 are the models that fits of 3 and 6 steps give (selection on the same
    validation checks), stored as <name>@<step>, reused while unchanged, and their budgets read back (examples)."""
    from metalearn.study.experiment import budget

    small = ClassDataset(omniglot_train.images[:30], omniglot_train.class_names[:30], "small")
    val = Validation(EpisodeSampler(omniglot_test, 5, 1, 2), predictor, episodes=4, every=3)
    sampler, ctx = EpisodeSampler(small, 5, 1, 2), FitContext("nb", 0, models_dir=str(tmp_path))
    torch.manual_seed(0)
    snaps = fit_snapshots("p", ProtoNet(Conv4()), sampler, (6, 3), train_episodic, Episodic(), ctx, val)
    assert sorted(snaps) == [3, 6] and (tmp_path / "nb" / "p@3.pt").exists() and (tmp_path / "nb" / "p@6.pt").exists()
    for steps in (3, 6):
        torch.manual_seed(0)
        single = ProtoNet(Conv4())
        curve, _ = fit(f"single{steps}", single, sampler, steps, train_episodic, Episodic(), ctx, val)
        model, snap_curve, seconds = snaps[steps]
        for (name, a), b in zip(single.state_dict().items(), model.state_dict().values(), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{name}: checkpoint {steps} differs")
        assert budget(snap_curve, seconds)["train_examples"] == budget(curve, 0)["train_examples"] == steps * 5 * 3
    capsys.readouterr()
    torch.manual_seed(0)
    again = fit_snapshots("p", ProtoNet(Conv4()), sampler, (3, 6), train_episodic, Episodic(), ctx, val)
    assert "reused its checkpoints" in capsys.readouterr().out
    assert all(torch.equal(a, b) for s in (3, 6) for a, b in zip(
        again[s][0].state_dict().values(), snaps[s][0].state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="snapshots must be distinct"):
        fit_snapshots("p", ProtoNet(Conv4()), sampler, (3, 3), train_episodic, Episodic(), ctx, val)


def test_scored_rows_carry_the_budget_and_the_validation_score_the_model_was_chosen_on():
    from metalearn.study.experiment import scored_rows

    curve = pd.DataFrame({"model": "m", "step": [2, 4, 6, 4], "examples": [20, 40, 60, 40],
                          "loss": [1.0, 0.8, 0.7, None], "val_accuracy": [None, None, None, 61.5]})
    curve = pd.concat([curve, pd.DataFrame({"model": ["m"], "step": [6], "examples": [60], "val_accuracy": [58.0]})])
    result = EvalResult(55.0, 1.2, 600, np.full(600, 55.0))
    test, val = scored_rows("04_p", "protonet", ("cifar_fs", 5, 1), result, curve, 12.5, scale="study", device="cpu",
                            seed=2)
    assert (test["metric"], test["value"], test["n_test"], test["seed"]) == ("accuracy", 55.0, 600, 2)
    assert (val["metric"], val["value"], val["ci95"]) == ("val_accuracy", 61.5, None)  # the best check
    assert all((r["train_steps"], r["train_examples"], r["train_seconds"]) == (6, 60, 12.5) for r in (test, val))
    [only] = scored_rows("04_p", "protonet", ("cifar_fs", 5, 1), result, curve.drop(columns="val_accuracy"), 1.0,
                         scale="study", device="cpu", seed=0, budget=100)
    assert only["budget"] == 100 and only["metric"] == "accuracy"


def test_fit_refit_trains_the_final_model_for_the_chosen_length_on_more_classes(omniglot_train, omniglot_test):
    train_part = ClassDataset(omniglot_train.images[:20], omniglot_train.class_names[:20], "part")
    more = ClassDataset(omniglot_train.images[:40], omniglot_train.class_names[:40], "part+more")
    val = Validation(EpisodeSampler(omniglot_test, 5, 1, 2), predictor, episodes=6, every=2)
    made = []

    def make_model(data):
        made.append(data.dataset.name)
        torch.manual_seed(0)
        return ProtoNet(Conv4())

    model, curve, _seconds, chosen = fit_refit("p", make_model, EpisodeSampler(train_part, 5, 1, 2),
                                               EpisodeSampler(more, 5, 1, 2), 6, train_episodic, Episodic(),
                                               FitContext("nb", 0), val)
    assert made == ["part", "part+more"]
    selection = curve[curve.model == "p-selection"].dropna(subset=["val_accuracy"])
    assert chosen == int(selection.loc[selection["val_accuracy"].idxmax(), "step"])
    final = curve[curve.model == "p"]
    assert final["step"].max() == chosen and final["val_accuracy"].isna().all()
    same = make_model(EpisodeSampler(more, 5, 1, 2))  # the final model: on the larger set, for `chosen` steps
    fit("q", same, EpisodeSampler(more, 5, 1, 2), chosen, train_episodic, Episodic(), FitContext("nb", 0))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True))


def test_budget_extrapolation_recovers_a_log_linear_curve():
    seconds = np.array([10, 20, 40, 80, 160, 320, 640, 1280.0])
    curve = pd.DataFrame({"seconds": seconds, "val_accuracy": 50 + 3 * np.log2(seconds / 10)})
    out = budget_extrapolation(curve, gap=6.0)  # 3 points per doubling: 6 points is 4x the budget
    assert out["points_per_doubling"] == pytest.approx(3.0) and out["factor"] == pytest.approx(4.0)
    assert out["needed"] == pytest.approx(4 * 1280)
    assert out["rising"] and out["slope"] == pytest.approx(3.0) and out["window"] == (160.0, 1280.0)
    flat = budget_extrapolation(curve.assign(val_accuracy=60.0 - np.arange(8) * 0.1), gap=1.0)
    assert flat["factor"] == float("inf") and not flat["rising"]
    # rising early, flat (noisy) in the last third: the half-curve fit still grows, but it is a plateau
    noise = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.6, -0.7, 0.5])
    plateau = np.concatenate([50 + 3 * np.log2(seconds[:5] / 10), [62.0, 62.0, 62.0]]) + noise
    out = budget_extrapolation(curve.assign(val_accuracy=plateau), gap=3.0)
    assert out["points_per_doubling"] > 0 and out["factor"] < float("inf") and not out["rising"]
    assert out["trend"] == "undetermined"  # ±0.7 of noise on three checks: too noisy to call it a plateau
    assert flat["trend"] == "plateau" and budget_extrapolation(curve, gap=1.0)["trend"] == "rising"
    with pytest.raises(ValueError, match="at least 4"):
        budget_extrapolation(curve.head(3), gap=1.0)


def test_a_reference_measured_otherwise_is_not_comparable():
    res = {("cifar_fs", 5, 1): EvalResult(50.0, 0.8, 600, np.zeros(600))}
    table = paper_comparison(res, {("cifar_fs", 5, 1): Reference(61.9, "64-96-128-256 + FC encoder", False)},
                             {("cifar_fs", 5): 3.0}, protocol="Conv-4 (64), non-transductive")
    assert table.loc[0, "met"] is None and table.loc[0, "our protocol"] == "Conv-4 (64), non-transductive"
    assert paper_summary(table, "gnn").endswith("gap +11.90: not comparable (64-96-128-256 + FC encoder)")


def test_against_pairs_with_another_chapters_episodes_and_refuses_other_episodes(omniglot_test, tmp_path):
    from metalearn.core.results import write_episodes

    evaluator = Evaluator({"omniglot": omniglot_test}, {"omniglot": 30}, queries=2, seed=0)
    torch.manual_seed(0)
    a, b = ProtoNet(Conv4()), ProtoNet(Conv4())
    ra, rb = evaluator(a, "omniglot", 5, 1), evaluator(b, "omniglot", 5, 1)
    digest = {"omniglot": omniglot_test.digest}
    # b's model of training seed 0 (the chapter's) and one of seed 1 that fits worse: the pairing reads seed 0's
    rb1 = rb.per_episode - 10
    path = write_episodes("00_x", {("b", "omniglot", 5, 1, 0): rb, ("b", "omniglot", 5, 1, 1): rb1}, tmp_path,
                          episode_seed=0, queries=2, data=digest)
    d = evaluator.against(ra, path, "b", "omniglot", 5, 1)
    assert d.mean == pytest.approx(ra.mean - rb.mean) and d.n == 30
    write_episodes("00_y", {("b", "omniglot", 5, 1, 0): rb}, tmp_path, episode_seed=1, queries=2, data=digest)
    with pytest.raises(ValueError, match="episode_seed 1 vs ours 0"):
        evaluator.against(ra, tmp_path / "episodes" / "00_y.csv", "b", "omniglot", 5, 1)
    with pytest.raises(ValueError, match="no units of c"):
        evaluator.against(ra, path, "c", "omniglot", 5, 1)


def test_extrapolations_only_for_missed_targets_with_a_curve():
    res = {("cifar_fs", 5, 1): EvalResult(50.0, 0.8, 600, np.zeros(600)),
           ("cifar_fs", 5, 5): EvalResult(71.0, 0.6, 600, np.zeros(600))}
    table = paper_comparison(res, {("cifar_fs", 5, 1): 55.5, ("cifar_fs", 5, 5): 72.0}, {("cifar_fs", 5): 3.0})
    seconds = np.array([10, 20, 40, 80, 160, 320.0])
    curves = pd.DataFrame({"model": "m1", "seconds": seconds, "val_accuracy": 40 + 1.25 * np.log2(seconds / 10)})
    out = extrapolations(table, curves, {("cifar_fs", 5, 1): "m1", ("cifar_fs", 5, 5): "m5"})
    assert list(out["setting"]) == ["cifar_fs 5w1s"]  # 5w5s is within its target
    assert out.loc[0, "missing beyond target"] == 2.5 and out.loc[0, "x budget"] == "4"  # 2.5 / 1.25 = 2 doublings


def test_floor_extrapolations_target_the_baseline_only_where_below_it():
    seconds = np.array([10, 20, 40, 80, 160, 320.0])
    curves = pd.DataFrame({"model": "m1", "seconds": seconds, "val_accuracy": 40 + 1.25 * np.log2(seconds / 10)})
    vs = {("cifar_fs", 5, 1): PairedDifference(-2.5, 0.5, 600), ("cifar_fs", 5, 5): PairedDifference(0.4, 0.5, 600)}
    out = floor_extrapolations(vs, curves, {("cifar_fs", 5, 1): "m1", ("cifar_fs", 5, 5): "m1"})
    assert list(out["setting"]) == ["cifar_fs 5w1s"] and out.loc[0, "x budget"] == "4"

def test_learning_curves_figure_has_both_panels():
    from metalearn.study.plotting import learning_curves

    curves = pd.DataFrame({"model": ["a", "a", "a"], "step": [1, 2, 2], "seconds": [0.5, 1.0, 1.0],
                           "loss": [2.0, 1.0, float("nan")], "val_accuracy": [float("nan"), float("nan"), 40.0]})
    fig = learning_curves(curves)
    assert [len(ax.lines) for ax in fig.axes] == [1, 1]


def test_a_fits_budget_is_its_steps_and_examples_seen():
    """Every logged row carries the examples seen so far (the deterministic unit), and budget() reads a fit's steps
    and examples back from its curve: a re-run gives the same numbers, unlike its seconds."""
    from metalearn.gradient.maml import train_maml
    from metalearn.gradient.outer_loop import MetaTraining
    from metalearn.gradient.regression import SinusoidSampler, sinusoid_mlp
    from metalearn.study.experiment import budget

    settings = MetaTraining(tasks=3, inner_steps=1, inner_lr=0.01, inner="all", regression=True)
    curves = []
    for _ in range(2):
        torch.manual_seed(0)
        curve, seconds = fit("sine", sinusoid_mlp(8), SinusoidSampler(5, 7), 6, train_maml, settings,
                             FitContext("x", 0))
        curves.append(curve)
    assert curves[0]["examples"].tolist() == [3 * (5 + 7) * s for s in curves[0]["step"]]  # tasks x (K + queries)
    assert budget(curves[0], seconds) == {"train_seconds": seconds, "train_steps": 6, "train_examples": 216}
    assert budget(curves[0], 1.0) == budget(curves[1], 1.0)
    two = pd.concat([curves[0], curves[1].assign(model="sine-final")])  # a fit_refit's two runs add up
    assert budget(two, 2.0)["train_examples"] == 432
    with pytest.raises(ValueError, match="no examples column"):
        budget(curves[0].drop(columns="examples"), 1.0)


def test_equal_compute_budgets_are_steps_at_a_stated_pace_and_checkpoints_per_seed(omniglot_train, omniglot_test):
    from metalearn.study.equal_compute import budget_results, budget_steps, fit_budgets

    assert budget_steps([600, 100, 300], 0.2) == {100: 500, 300: 1500, 600: 3000}
    for bad, pace in (([100, 100], 0.2), ([0, 100], 0.2), ([], 0.2), ([100], 0.0), ([1, 2], 10.0)):
        with pytest.raises(ValueError):
            budget_steps(bad, pace)
    small = ClassDataset(omniglot_train.images[:30], omniglot_train.class_names[:30], "small")
    val = Validation(EpisodeSampler(omniglot_test, 5, 1, 2), predictor, episodes=4, every=2)
    fits = fit_budgets("p", lambda: ProtoNet(Conv4()), EpisodeSampler(small, 5, 1, 2), {2: 2, 4: 4}, (0, 1),
                       train_episodic, Episodic(), FitContext("nb", 0), val)
    assert sorted(fits) == [(0, 2), (0, 4), (1, 2), (1, 4)]
    first = [next(iter(fits[(s, 4)][0].state_dict().values())) for s in (0, 1)]
    assert not torch.equal(*first)  # each seed starts from its own initial weights
    sampler = EpisodeSampler(omniglot_test, 5, 1, 2)

    def score(model):
        from metalearn.core.evaluate import evaluate
        return {"protonet": evaluate(predictor(model), sampler, episodes=3, seed=0)}

    rows, units, table = budget_results("nb", ("omniglot", 5, 1), fits, score, scale="smoke", device="cpu")
    assert [(r["seed"], r["budget"], r["train_steps"], r["metric"]) for r in rows] == [
        (0, 2, 2, "accuracy"), (0, 4, 4, "accuracy"), (1, 2, 2, "accuracy"), (1, 4, 4, "accuracy")]
    assert sorted(units) == [("protonet", "omniglot", 5, 1, s, b) for s in (0, 1) for b in (2, 4)]
    assert list(table.columns) == ["method", "budget (s)", "seed", "steps", "examples", "measured (s)", "accuracy",
                                   "ci95"] and table["examples"].tolist() == [30, 60, 30, 60]
