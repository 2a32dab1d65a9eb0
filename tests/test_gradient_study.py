"""The gradient-based chapters' glue: settings from parameters, shared models, adapted evaluation, other chapters'
results."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from metalearn.core import results
from metalearn.gradient.evaluation import protocol_queries
from metalearn.gradient.inner_loop import Adaptation, inner_names
from metalearn.gradient.maml import train_maml
from metalearn.gradient.networks import StridedConv4
from metalearn.gradient.reptile import train_reptile
from metalearn.study.experiment import FitContext
from metalearn.study.gradient import (
    SeedRun,
    Selection,
    by_seed,
    difference_column,
    equal_time,
    evaluate_adapted,
    evaluation_speedup,
    fit_meta_models,
    fit_seeds,
    maml_plans,
    paired_by_setting,
    plan_table,
    result_rows,
    score_seeds,
    select,
    setting_curves,
    setting_label,
    training_seconds,
    with_steps,
)
from metalearn.study.reptile import reptile_inner_lr_search, reptile_plans

SETTINGS = {"omniglot_5way": dict(steps=1, tasks=2, inner_steps=1, inner_lr=0.4, train_queries=1, test_inner_steps=1,
                                  test_inner_lr=0.4),
            "omniglot_20way": dict(steps=1, tasks=1, inner_steps=2, inner_lr=0.1, train_queries=1, test_inner_steps=2,
                                   test_inner_lr=0.2, train_shots=1),
            "cifar_fs_5way": dict(steps=1, tasks=1, inner_steps=2, inner_lr=0.01, train_queries=2, test_inner_steps=3,
                                  test_inner_lr=0.01)}
CTX = FitContext("t", 0)


def plans(settings: dict = SETTINGS, inner: str = "no_norms") -> dict:
    """MAML's plans (Finn et al.'s inner loop: every parameter but BatchNorm's)."""
    return maml_plans(settings, lr=1e-3, cosine=False, inner=inner, meta_step="loop")


def test_plans_read_the_parameters_and_set_every_field_once() -> None:
    setups = plans()
    assert list(setups) == [("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5),
                            ("cifar_fs", 5, 1), ("cifar_fs", 5, 5)]
    twenty = setups[("omniglot", 20, 5)]
    assert twenty.settings.inner_steps == 2 and twenty.train_shots == 1 and twenty.settings.inner_lr == 0.1
    # the test-time rule is its own object, with its own step size
    assert twenty.rule == Adaptation(steps=2, lr=0.2, inner="no_norms", protocol="transductive")
    assert setups[("omniglot", 5, 5)].train_shots is None and setups[("cifar_fs", 5, 1)].rule.steps == 3
    assert setups[("cifar_fs", 5, 5)].train_queries == 2 and setups[("cifar_fs", 5, 5)].test_queries is None
    assert plan_table(setups).loc["omniglot 20w5s", "test lr"] == 0.2
    with pytest.raises(ValueError, match=r"lacks \['steps'\]"):
        plans({"cifar_fs_5way": {k: v for k, v in SETTINGS["cifar_fs_5way"].items() if k != "steps"}})
    with pytest.raises(ValueError, match=r"lacks \['test_inner_lr'\]"):
        plans({"cifar_fs_5way": {k: v for k, v in SETTINGS["cifar_fs_5way"].items() if k != "test_inner_lr"}})
    with pytest.raises(ValueError, match="unknown \\['inner_batch'\\]"):
        plans({"cifar_fs_5way": SETTINGS["cifar_fs_5way"] | {"inner_batch": 10}})
    with pytest.raises(ValueError, match="<dataset>_<ways>way"):
        plans({"omniglot": SETTINGS["omniglot_5way"]})
    with pytest.raises(ValueError, match="Adaptation.inner must be one of"):
        plans(inner="body")


def test_reptile_plans_carry_nichols_rule() -> None:
    eval_batch = {"omniglot 5w1s": 5, "omniglot 5w5s": 10}
    setups = reptile_plans({"omniglot_5way": SETTINGS["omniglot_5way"]}, lr=1.0, inner_batch={"omniglot_5way": 3},
                           eval_batch=eval_batch)
    five = setups[("omniglot", 5, 5)]
    assert five.settings.inner_batch == 3 and five.settings.lr == 1.0
    assert five.rule == Adaptation(steps=1, lr=0.4, inner="all", protocol="nichol", minibatch=10)
    with pytest.raises(ValueError, match="eval_batch for every setting"):
        reptile_plans({"omniglot_5way": SETTINGS["omniglot_5way"]}, lr=1.0, inner_batch={"omniglot_5way": 3},
                      eval_batch={"omniglot 5w1s": 5})
    with pytest.raises(ValueError, match="minibatch must be >= 1 and adapts every parameter"):
        Adaptation(steps=1, lr=0.1, inner="no_norms", protocol="nichol", minibatch=5)


def test_shared_models_evaluation_and_rows(omniglot_train, omniglot_test, tmp_path) -> None:
    setups = {k: v for k, v in plans().items() if k[1] == 20}
    models, curves, seconds = fit_meta_models("maml", setups, {"omniglot": omniglot_train}, train_maml, CTX)
    assert models[("omniglot", 20, 1)] is models[("omniglot", 20, 5)]  # one model trained on 1-shot tasks
    assert list(curves.setting.unique()) == ["20w1s"]
    res = evaluate_adapted("maml", models, setups, {"omniglot": omniglot_test}, episodes=3, seed=0)
    assert set(res) == {"maml", "maml_transductive"} and all(r.n == 3 for m in res.values() for r in m.values())
    # Nichol's evaluation: one query per class (20 per episode); the transductive rows: K = 5 per class (100)
    nichol, transductive = res["maml"][("omniglot", 20, 5)], res["maml_transductive"][("omniglot", 20, 5)]
    assert all(abs(a * 20 / 100 - round(a * 20 / 100)) < 1e-6 for a in nichol.per_episode)
    assert protocol_queries("nichol", 5, None) == 1 and protocol_queries("transductive", 5, None) == 5
    assert protocol_queries("transductive", 5, 15) == 15
    again = evaluate_adapted("other", models, setups, {"omniglot": omniglot_test}, episodes=3, seed=0)
    same = paired_by_setting(again["other_transductive"], res["maml_transductive"])
    assert all(d.mean == 0 and d.n == 3 for d in same.values())  # the same model on the same episodes
    assert difference_column(same, [("omniglot", 20, 1), ("omniglot", 5, 1)]) == ["+0.00 ± 0.00", "–"]
    assert transductive.n == 3
    by_setting = setting_curves(curves, setups)
    assert by_setting[("omniglot", 20, 5)] is not None and by_setting[("omniglot", 20, 5)].equals(
        by_setting[("omniglot", 20, 1)])  # the 1-shot model's curve serves 20w5s
    rows = result_rows("t", res, seconds, curves=by_setting, scale="smoke", device="cpu", seed=0)
    assert len(rows) == 4 and {r["method"] for r in rows} == {"maml", "maml_transductive"}
    steps = int(curves["step"].max())
    assert all(r["train_steps"] == steps and r["train_examples"] == int(curves["examples"].max()) for r in rows)
    rows_file, metrics_file, *_ = results.write_metrics("t", rows, tmp_path, curves=curves)
    assert set(json.loads(metrics_file.read_text())["omniglot"]["20w5s"]) == {"maml", "maml_transductive"}


def test_one_pass_scores_every_row_on_the_shared_episodes(omniglot_train, omniglot_test) -> None:
    """With ``shared_queries``, one adaptation per episode gives every row: the shared episodes (those of chapters
    00-08, drawn with that many queries per class), Finn's transductive row on the first K queries of each class and
    Nichol's on the first one; a row that needs more queries than the shared episodes have gets episodes of its
    own."""
    own = {k: v for k, v in plans().items() if k == ("omniglot", 20, 5)}  # test_queries None: K = 5
    models, _, _ = fit_meta_models("maml", own, {"omniglot": omniglot_train}, train_maml, CTX)
    key = ("omniglot", 20, 5)
    alone = evaluate_adapted("maml", models, own, {"omniglot": omniglot_test}, episodes=3, seed=0)
    res = evaluate_adapted("maml", models, own, {"omniglot": omniglot_test}, episodes=3, seed=0, shared_queries=6)
    assert set(res) == {"maml", "maml_transductive", "maml_transductive_6q"}
    shared = res["maml_transductive_6q"][key]
    assert all(abs(a * 120 / 100 - round(a * 120 / 100)) < 1e-6 for a in shared.per_episode)  # 6 x 20 queries
    assert all(abs(a * 100 / 100 - round(a * 100 / 100)) < 1e-6 for a in res["maml_transductive"][key].per_episode)
    assert all(abs(a * 20 / 100 - round(a * 20 / 100)) < 1e-6 for a in res["maml"][key].per_episode)
    # the shared row is the episodes' own: the same as scoring a setup whose test queries are those
    as_shared = {key: replace(own[key], test_queries=6)}
    direct = evaluate_adapted("maml", models, as_shared, {"omniglot": omniglot_test}, episodes=3, seed=0)
    assert (direct["maml_transductive"][key].per_episode == shared.per_episode).all()
    # fewer shared queries than K = 5: Finn's row keeps its own episodes (those of the run without shared ones)
    few = evaluate_adapted("maml", models, own, {"omniglot": omniglot_test}, episodes=3, seed=0, shared_queries=2)
    assert (few["maml_transductive"][key].per_episode == alone["maml_transductive"][key].per_episode).all()
    assert all(abs(a * 40 / 100 - round(a * 40 / 100)) < 1e-6 for a in few["maml_transductive_2q"][key].per_episode)


def test_reptile_models_per_group_and_the_inner_lr_search(omniglot_train, omniglot_test) -> None:
    """Each group of settings trains with its own inner minibatch; the search scores every candidate on the
    validation classes and gives each searched data set's plans the best rate, for training and test alike."""
    setups = reptile_plans({"omniglot_5way": SETTINGS["omniglot_5way"],
                            "omniglot_20way": SETTINGS["omniglot_20way"] | {"tasks": 1, "test_inner_lr": 0.1}}, lr=1.0,
                           inner_batch={"omniglot_5way": 3, "omniglot_20way": 4},
                           eval_batch={"omniglot 5w1s": 5, "omniglot 5w5s": 5, "omniglot 20w1s": 10,
                                       "omniglot 20w5s": 10})
    assert setups[("omniglot", 5, 5)].settings.inner_batch == 3 and setups[("omniglot", 20, 1)].settings.inner_batch == 4
    models, curves, seconds = fit_meta_models("reptile", setups, {"omniglot": omniglot_train}, train_reptile, CTX)
    assert list(models) == list(setups) and models[("omniglot", 20, 1)] is models[("omniglot", 20, 5)]
    assert list(curves.setting.unique()) == ["5w1s", "5w5s", "20w1s"] and set(seconds) == set(setups)
    grid, chosen = reptile_inner_lr_search(setups, {"omniglot": omniglot_train}, {"omniglot": omniglot_test},
                                           {"omniglot": [0.05, 0.2]}, CTX, steps=1, episodes=2)
    assert list(grid.columns) == ["dataset", "inner lr", "validation accuracy"] and list(grid["inner lr"]) == [0.05, 0.2]
    best = grid.loc[grid["validation accuracy"].idxmax(), "inner lr"]
    assert {p.settings.inner_lr for p in chosen.values()} == {best} == {p.rule.lr for p in chosen.values()}
    assert all(replace(chosen[k].settings, inner_lr=0.0, test=None) == replace(setups[k].settings, inner_lr=0.0,
                                                                             test=None) for k in setups)
    untied = {k: replace(p, settings=replace(p.settings, test=replace(p.rule, lr=0.01))) for k, p in setups.items()}
    with pytest.raises(ValueError, match="set test_inner_lr apart from inner_lr"):  # before any training
        reptile_inner_lr_search(untied, {"omniglot": omniglot_train}, {"omniglot": omniglot_test},
                                {"omniglot": [0.05]}, CTX, steps=1, episodes=2)


def test_papers_backbone_inner_loop_and_selection_on_validation_classes(omniglot_train, omniglot_test) -> None:
    """Omniglot models get Finn et al.'s strided Conv-4, their inner loop leaves BatchNorm's γ/β alone, and with a
    ``Selection`` the curve carries the validation checks (omniglot_test stands in for validation classes here)."""
    setups = {k: replace(p, steps=4) for k, p in plans().items() if k == ("omniglot", 5, 1)}
    selection = Selection({"omniglot": omniglot_test}, episodes=2, every=2)
    models, curves, _ = fit_meta_models("maml", setups, {"omniglot": omniglot_train}, train_maml, CTX, selection)
    model = models[("omniglot", 5, 1)]
    assert isinstance(model.backbone, StridedConv4) and model.head.in_features == 64
    assert curves.dropna(subset=["val_accuracy"]).step.tolist() == [2, 4]
    names = inner_names(model, "no_norms")
    assert "head.weight" in names and not any(n.endswith(("1.weight", "1.bias")) for n in names)
    assert inner_names(model, "all") is None and inner_names(model, "head") == ["head.weight", "head.bias"]
    no_rule = {k: replace(p, settings=replace(p.settings, test=None)) for k, p in setups.items()}
    with pytest.raises(ValueError, match="has no test-time rule"):
        fit_meta_models("maml", no_rule, {"omniglot": omniglot_train}, train_maml, CTX, selection)


def test_settings_named_by_label_get_their_own_budget() -> None:
    setups = plans()
    assert setting_label(("omniglot", 20, 5)) == "omniglot 20w5s"
    timed = with_steps(setups, {"omniglot 5w1s": 7, "cifar_fs 5w5s": 3})
    assert list(timed) == [("omniglot", 5, 1), ("cifar_fs", 5, 5)]
    assert timed[("omniglot", 5, 1)].steps == 7 and timed[("cifar_fs", 5, 5)].settings.inner_lr == 0.01
    with pytest.raises(ValueError, match="no setting \\['omniglot 5w2s'\\]"):
        with_steps(setups, {"omniglot 5w2s": 7})


def test_a_further_training_seed_trains_its_own_models_of_the_selected_settings(omniglot_train) -> None:
    setups = plans()
    chosen = select(setups, ["omniglot 5w1s"])
    assert list(chosen) == [("omniglot", 5, 1)] and chosen[("omniglot", 5, 1)] is setups[("omniglot", 5, 1)]
    with pytest.raises(ValueError, match="no setting \\['cifar_fs 5w2s'\\]"):
        select(setups, ["omniglot 5w1s", "cifar_fs 5w2s"])
    first, curves, _ = fit_meta_models("maml", chosen, {"omniglot": omniglot_train}, train_maml, CTX)
    again, _, _ = fit_meta_models("maml", chosen, {"omniglot": omniglot_train}, train_maml, CTX, seed=CTX.seed)
    other, other_curves, _ = fit_meta_models("maml", chosen, {"omniglot": omniglot_train}, train_maml, CTX, seed=7)
    key = ("omniglot", 5, 1)
    same = [torch.equal(a, b) for a, b in zip(first[key].state_dict().values(), again[key].state_dict().values(),
                                              strict=True)]
    assert all(same)  # the context's seed is the default
    assert not torch.equal(next(iter(first[key].parameters())), next(iter(other[key].parameters())))
    assert set(curves.model) == {"maml-omniglot-5w1s"} and set(other_curves.model) == {"maml-omniglot-5w1s-seed7"}


def test_further_seeds_are_scored_on_the_chapter_episodes_and_paired_by_seed(omniglot_train, omniglot_test) -> None:
    """fit_seeds re-trains each run at every seed but the chapter's; score_seeds scores them on the episodes the
    chapter's seed draws and writes rows only for the chapter's own methods, each with its training seed."""
    chosen = select(plans(), ["omniglot 5w1s"])
    key = ("omniglot", 5, 1)
    runs = {"maml": SeedRun(chosen, train_maml, CTX), "other": SeedRun(chosen, train_maml, CTX)}
    fits = fit_seeds(runs, [0, 3, 4], CTX.seed, {"omniglot": omniglot_train})
    assert set(fits) == {3, 4} and set(fits[3]) == {"maml", "other"}
    assert set(fits[4]["maml"][1].model) == {"maml-omniglot-5w1s-seed4"}
    scored, rows = score_seeds("t", fits, runs, {"omniglot": omniglot_test}, episodes=3, seed=0, shared_queries=None,
                               own=("maml",), scale="smoke", device="cpu")
    assert {r["seed"] for r in rows} == {3, 4} and {r["method"] for r in rows} == {"maml", "maml_transductive"}
    assert set(scored[3]) == {"maml", "maml_transductive", "other", "other_transductive"}
    chapter, _, _ = fit_meta_models("maml", chosen, {"omniglot": omniglot_train}, train_maml, CTX)
    scored[0] = evaluate_adapted("maml", chapter, chosen, {"omniglot": omniglot_test}, episodes=3, seed=0)
    per_seed = by_seed(scored, "maml_transductive", key)
    assert list(per_seed) == [0, 3, 4] and all(r.n == 3 for r in per_seed.values())
    assert list(by_seed(scored, "other_transductive", key)) == [3, 4]  # only the seeds that scored the row
    # the same episodes for every seed: seeds 3 and 4's "maml" and "other" are the same runs, hence equal scores
    assert (scored[3]["maml"][key].per_episode == scored[3]["other"][key].per_episode).all()


def test_equal_time_scales_the_budget_by_the_measured_pace() -> None:
    setups = plans()
    one, five = ("omniglot", 5, 1), ("cifar_fs", 5, 5)
    seconds = {k: 10.0 for k in setups}
    target = {k: 35.0 for k in setups}
    timed = equal_time(setups, ["omniglot 5w1s", "cifar_fs 5w5s"], seconds, target)
    assert list(timed) == [one, five]
    assert timed[one].steps == round(setups[one].steps * 3.5) and timed[five].steps == round(setups[five].steps * 3.5)
    assert equal_time(setups, [], seconds, target) == {}
    with pytest.raises(ValueError, match="no setting \\['omniglot 5w2s'\\]"):
        equal_time(setups, ["omniglot 5w2s"], seconds, target)
    assert equal_time(setups, ["omniglot 5w1s"], seconds | {one: 0.0}, target)[one].steps == round(35.0 / 0.1)
    assert equal_time(setups, ["omniglot 5w1s"], seconds, target | {one: 0.0})[one].steps == 1
    with pytest.raises(ValueError, match="omniglot 5w1s: training times must be seconds >= 0"):
        equal_time(setups, ["omniglot 5w1s"], seconds | {one: float("nan")}, target)


def test_the_replaced_loop_and_the_one_pass_are_timed_on_the_same_episodes(omniglot_train, omniglot_test) -> None:
    setups = {k: v for k, v in plans().items() if k == ("omniglot", 5, 1)}
    models, _, seconds = fit_meta_models("maml", setups, {"omniglot": omniglot_train}, train_maml, CTX)
    speed = evaluation_speedup(models, setups, {"omniglot": omniglot_test}, episodes=3, seed=0, shared_queries=2)
    assert list(speed.setting) == ["omniglot 5w1s"] and speed["path"].iloc[0] == "lean"
    r = speed.iloc[0]
    assert r["loop s"] >= 0 and r["one pass s"] >= 0 and 0 < r["evaluation_speedup"] < float("inf")
    shared_model = {("omniglot", 5, 1): models[("omniglot", 5, 1)], ("omniglot", 5, 5): models[("omniglot", 5, 1)]}
    assert training_seconds((shared_model, {k: 7.0 for k in shared_model})) == 7.0  # one model, counted once
    assert training_seconds((models, seconds), ({("x", 1, 1): torch.nn.Linear(1, 1)}, {("x", 1, 1): 2.0})) \
        == pytest.approx(seconds[("omniglot", 5, 1)] + 2.0)


def test_equal_compute_checkpoints_of_a_setting_train_on_its_plans_inputs(omniglot_train, omniglot_test) -> None:
    """fit_meta_budgets trains what fit_meta_models would (the same network, episodes and validation) once per
    seed, with a checkpoint at each budget; seed 0's largest checkpoint is fit_meta_models' model of that length."""
    from dataclasses import replace as with_

    from metalearn.study.gradient import Selection, fit_meta_budgets

    key = ("omniglot", 5, 1)
    plan = with_(plans()[key], steps=2)
    selection = Selection({"omniglot": omniglot_test}, episodes=2, every=1)
    fits = fit_meta_budgets("maml", plan, key, {"omniglot": omniglot_train}, train_maml, {10: 1, 20: 2}, (0, 1),
                            CTX, selection)
    assert sorted(fits) == [(0, 10), (0, 20), (1, 10), (1, 20)]
    models, _, _ = fit_meta_models("maml", {key: plan}, {"omniglot": omniglot_train}, train_maml, CTX, selection)
    for a, b in zip(models[key].state_dict().values(), fits[(0, 20)][0].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fits[(1, 20)][1]["val_accuracy"].notna().sum() == 2
