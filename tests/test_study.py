"""Notebook glue: a named, resumable fit; each (model, setting) evaluated once; the paper comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from metalearn.episodes import ClassDataset, EpisodeSampler
from metalearn.evaluate import EvalResult
from metalearn.models import Conv4
from metalearn.protonet import ProtoNet
from metalearn.study import Evaluator, fit, paper_comparison, paper_summary, task_shift_results


def test_fit_resumes_and_evaluator_caches(omniglot_train, omniglot_test, tmp_path):
    small = ClassDataset(omniglot_train.images[:30], omniglot_train.class_names[:30])
    sampler = EpisodeSampler(small, 5, 1, 2)
    torch.manual_seed(0)
    model = ProtoNet(Conv4())
    curve, _ = fit("p", model, sampler, 6, notebook="nb", seed=0, checkpoint_dir=str(tmp_path))
    assert list(curve["step"])[-1] == 6 and len(list(tmp_path.glob("nb-p-*.pt"))) == 1
    torch.manual_seed(0)  # the same initial weights: the same key (another seed would be another model)
    again, _ = fit("p", ProtoNet(Conv4()), sampler, 6, notebook="nb", seed=0, checkpoint_dir=str(tmp_path))
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
    from metalearn.models import conv4_for
    from metalearn.study import task_shift
    from metalearn.task_shift import as_cifar_format, as_omniglot_format

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
    from metalearn.models import conv4_for

    cifar = ClassDataset.from_numpy(*cifar_splits["test"], name="cifar_fs/test")
    omni = ClassDataset(omniglot_test.images[:40], omniglot_test.class_names[:40], name="omniglot/test")
    evaluator = Evaluator({"omniglot": omni, "cifar_fs": cifar}, {"omniglot": 2, "cifar_fs": 2}, queries=2, seed=0)
    models = {(m, d): ProtoNet(conv4_for((1, 28, 28) if d == "omniglot" else (3, 32, 32))).eval()
              for m in ("p", "q") for d in ("omniglot", "cifar_fs")}
    table, rows = task_shift_results("nb", evaluator, ["p", "q"], lambda m, d, k: models[(m, d)],
                                     lambda m, d, k: {"p": 1.0, "q": 2.0}[m] + k, scale="smoke", device="cpu", seed=3)
    assert len(table) == len(rows) == 8 and list(table.index) == list(range(8))
    assert [(r["method"], r["trained_on"], r["dataset"], r["shots"]) for r in rows[:2]] == [
        ("p", "omniglot", "cifar_fs", 1), ("p", "omniglot", "cifar_fs", 5)]
    assert [r["train_seconds"] for r in rows] == [2.0, 6.0, 2.0, 6.0, 3.0, 7.0, 3.0, 7.0]
    assert all(r["value"] == rec["shifted model"] and r["n_test"] == 2 and r["seed"] == 3
               for r, rec in zip(rows, table.to_dict("records"), strict=True))
