"""Reptile's test-time rule: one adaptation per episode scored under both BatchNorm protocols."""

from __future__ import annotations

import pytest
import torch

from metalearn.core.episodes import EpisodeSampler, make_generator
from metalearn.core.models import Classifier
from metalearn.study.gradient import MetaSetup, backbone, evaluate_adapted, paired_by_setting
from metalearn.study.reptile_eval import adapt_support, evaluate_protocols, shared_episodes

KEY = ("omniglot", 5, 5)
SETUPS = {KEY: MetaSetup(steps=1, tasks=1, inner_steps=1, inner_lr=0.4, test_inner_steps=2)}


def _model(data) -> Classifier:
    torch.manual_seed(0)
    return Classifier(backbone("omniglot", tuple(data.images.shape[2:])), 5)


def test_full_batch_rows_match_the_chapters_evaluation(omniglot_test) -> None:
    """Without minibatches, the transductive row is chapters 09-12's (same episodes, same adaptation); the
    non-transductive row scores one query per class of those episodes, the same with the same seed."""
    model, sets = _model(omniglot_test), {"omniglot": omniglot_test}
    ours = evaluate_protocols("m", {KEY: model}, SETUPS, sets, episodes=6, seed=3, inner="no_norms")
    ref = evaluate_adapted("m", {KEY: model}, SETUPS, sets, episodes=6, seed=3)
    same = paired_by_setting(ours["m_transductive"], ref["m_transductive"])[KEY]
    assert same.n == 6 and abs(same.mean) < 1e-4 and same.ci95 < 1e-4  # float32 vs float64 percentages
    nichol = ours["m"][KEY].per_episode
    assert len(nichol) == 6 and abs(nichol / 20 - (nichol / 20).round()).max() < 1e-6  # 5 queries scored: one per class
    again = evaluate_protocols("m", {KEY: model}, SETUPS, sets, episodes=6, seed=3, inner="no_norms")
    assert (again["m"][KEY].per_episode == nichol).all()


def test_minibatch_adaptation_is_nichols(omniglot_test) -> None:
    """A minibatch as large as the support set is a full-batch step; smaller ones take a different, seeded path;
    neither changes the network (its BatchNorm statistics included)."""
    model = _model(omniglot_test)
    ep = EpisodeSampler(omniglot_test, 5, 5, 1).sample(1, make_generator(0, omniglot_test.device))
    sx, sy = ep.support_x[0], ep.support_y[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    kw = dict(steps=3, inner_lr=0.4, names=names)
    full = adapt_support(model, sx, sy, batch=None, **kw)
    whole = adapt_support(model, sx, sy, batch=25, **kw)
    torch.manual_seed(1)
    mini = adapt_support(model, sx, sy, batch=5, **kw)
    torch.manual_seed(1)
    mini_again = adapt_support(model, sx, sy, batch=5, **kw)
    assert all(torch.allclose(full[n], whole[n], atol=1e-6) for n in names)
    assert any(not torch.allclose(full[n], mini[n], atol=1e-4) for n in names)
    assert all(torch.equal(mini[n], mini_again[n]) for n in names)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the minibatch rule scores rows from it, for the settings named
    res = evaluate_protocols("r", {KEY: model}, SETUPS, {"omniglot": omniglot_test}, episodes=2, seed=0,
                             eval_batch={"omniglot 5w5s": 5})
    assert set(res) == {"r", "r_transductive"} and res["r"][KEY].n == 2
    only = evaluate_protocols("r", {KEY: model}, SETUPS, {"omniglot": omniglot_test}, episodes=2, seed=0,
                              eval_batch={"omniglot 5w5s": 5}, protocols=("transductive",))
    assert list(only) == ["r_transductive"] and (only["r_transductive"][KEY].per_episode ==
                                                 res["r_transductive"][KEY].per_episode).all()


@pytest.mark.parametrize("kwargs", [dict(eval_batch={"omniglot 20w5s": 10}), dict(eval_batch={"omniglot 5w5s": 0}),
                                    dict(eval_batch={"omniglot 5w5s": 5}, inner="no_norms"), dict(episodes=1),
                                    dict(protocols=("running",)), dict(protocols=())])
def test_bad_arguments_are_refused_before_work(omniglot_test, kwargs) -> None:
    args = dict(episodes=2, seed=0) | kwargs
    with pytest.raises(ValueError, match="eval_batch|episodes|protocols"):
        evaluate_protocols("r", {KEY: _model(omniglot_test)}, SETUPS, {"omniglot": omniglot_test}, **args)


def test_minibatch_adaptation_refuses_a_partial_names_list(omniglot_test) -> None:
    """Nichol et al.'s minibatch rule adapts every parameter: a names list that freezes some is an error, not
    silently ignored."""
    model = _model(omniglot_test)
    ep = EpisodeSampler(omniglot_test, 5, 1, 1).sample(1, make_generator(0, omniglot_test.device))
    head = [n for n, _ in model.named_parameters() if n.startswith("head")]
    with pytest.raises(ValueError, match="adapts every parameter.*head|batch=None"):
        adapt_support(model, ep.support_x[0], ep.support_y[0], steps=1, inner_lr=0.1, names=head, batch=5)


def test_shared_episodes_reuse_or_rescore_with_the_same_rule(omniglot_test) -> None:
    """The shared rows: a setting whose own test episodes have ``queries`` per class reuses its transductive result;
    another is adapted again with the same minibatch rule on episodes of ``queries`` per class, and gives the numbers
    that setting would have with those test queries."""
    model, sets, batch = _model(omniglot_test), {"omniglot": omniglot_test}, {"omniglot 5w5s": 5}
    own = evaluate_protocols("r", {KEY: model}, SETUPS, sets, episodes=2, seed=0, eval_batch=batch)  # 5 queries
    shared = shared_episodes("r", {KEY: model}, SETUPS, sets, episodes=2, seed=0, queries=3, eval_batch=batch,
                             done=own)
    assert list(shared) == ["r_transductive_3q"]
    computed = shared["r_transductive_3q"][KEY]
    assert computed is not own["r_transductive"][KEY]
    assert abs(computed.per_episode * 15 / 100 - (computed.per_episode * 15 / 100).round()).max() < 1e-6  # 5 x 3
    as_own = {KEY: MetaSetup(**vars(SETUPS[KEY]) | {"test_queries": 3})}
    again = evaluate_protocols("r", {KEY: model}, as_own, sets, episodes=2, seed=0, eval_batch=batch)
    assert (again["r_transductive"][KEY].per_episode == computed.per_episode).all()
    reused = shared_episodes("r", {KEY: model}, as_own, sets, episodes=2, seed=0, queries=3, eval_batch=batch,
                             done=again)["r_transductive_3q"][KEY]
    assert reused is again["r_transductive"][KEY]
