"""The gradient-based chapters' glue: settings from parameters, shared models, adapted evaluation, other chapters'
results."""

from __future__ import annotations

import json

import pytest
from metalearn import results
from metalearn.gradient_study import chapter_results, evaluate_adapted, fit_meta_models, meta_setups, result_rows

PARAMS = dict(omniglot_steps=1, omniglot_tasks=2, omniglot_inner_steps=1, omniglot_inner_lr=0.4,
              omniglot_steps_20way=1, omniglot_tasks_20way=1, omniglot_inner_steps_20way=2, omniglot_inner_lr_20way=0.1,
              omniglot_train_shots_20way=1, cifar_steps=1, cifar_tasks=1, cifar_inner_steps=2, cifar_inner_lr=0.01,
              train_queries=1, cifar_train_queries=2, test_inner_steps_omniglot=1, test_inner_steps_omniglot_20way=2,
              test_inner_steps_cifar=3)


def test_meta_setups_read_the_parameters() -> None:
    setups = meta_setups(PARAMS)
    assert list(setups) == [("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5),
                            ("cifar_fs", 5, 1), ("cifar_fs", 5, 5)]
    assert setups[("omniglot", 20, 5)].inner_steps == 2 and setups[("omniglot", 20, 5)].train_shots == 1
    assert setups[("omniglot", 5, 5)].train_shots is None and setups[("cifar_fs", 5, 1)].test_inner_steps == 3
    with pytest.raises(KeyError, match="cifar_steps"):
        meta_setups({k: v for k, v in PARAMS.items() if k != "cifar_steps"})


def test_shared_models_evaluation_and_rows(omniglot_train, omniglot_test, tmp_path) -> None:
    setups = {k: v for k, v in meta_setups(PARAMS).items() if k[1] == 20}
    models, curves, seconds = fit_meta_models("maml", setups, {"omniglot": omniglot_train}, notebook="t", seed=0)
    assert models[("omniglot", 20, 1)] is models[("omniglot", 20, 5)]  # one model trained on 1-shot tasks
    assert list(curves.setting.unique()) == ["20w1s"]
    res = evaluate_adapted("maml", models, setups, {"omniglot": omniglot_test}, episodes=3, queries=2, seed=0)
    assert set(res) == {"maml", "maml_transductive"} and all(r.n == 3 for m in res.values() for r in m.values())
    rows = result_rows("t", res, seconds, scale="smoke", device="cpu", seed=0)
    assert len(rows) == 4 and {r["method"] for r in rows} == {"maml", "maml_transductive"}
    path = results.write_metrics("t", rows, tmp_path, extra={"setups": {"x": 1}})
    back, extra = chapter_results(path, ("maml",))
    assert back["maml"][("omniglot", 20, 5)].mean == pytest.approx(res["maml"][("omniglot", 20, 5)].mean)
    assert extra["setups"] == {"x": 1}
    with pytest.raises(ValueError, match="no accuracy rows"):
        chapter_results(path, ("anil",))
    with pytest.raises(FileNotFoundError, match="dvc repro -s nothing"):
        chapter_results(tmp_path / "nothing.json", ("maml",))
    assert json.loads(path.read_text())["notebook"] == "t"
