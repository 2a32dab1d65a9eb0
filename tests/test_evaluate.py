"""Evaluation: confidence intervals, seeded episodes, perfect and chance predictors, chunks, paired differences,
validation checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from metalearn.core.episodes import EpisodeSampler
from metalearn.core.evaluate import EvalResult, Validation, evaluate, mean_ci95, paired_difference


def test_mean_ci95_is_the_t_interval():
    x = np.random.default_rng(0).normal(70, 10, 600)
    mean, ci = mean_ci95(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean())
    assert ci == pytest.approx((hi - lo) / 2, rel=1e-9)
    assert ci == pytest.approx(stats.norm.interval(0.95, scale=stats.sem(x))[1], rel=3e-3)  # ≈ normal at n = 600
    three = np.array([0.7, 0.8, 0.6])
    assert mean_ci95(three)[1] == pytest.approx(4.303 * three.std(ddof=1) / np.sqrt(3), rel=1e-3)  # t, not 1.96
    with pytest.raises(ValueError):
        mean_ci95(np.array([1.0]))


def test_perfect_chance_and_paired(omniglot_test):
    sampler = EpisodeSampler(omniglot_test, 5, 1, 15)
    res = evaluate(lambda ep: {"oracle": ep.query_y, "zero": torch.zeros_like(ep.query_y)}, sampler,
                   episodes=120, seed=0, tasks_per_batch=50)
    assert res["oracle"].mean == 100 and res["oracle"].ci95 == 0 and res["oracle"].n == 120
    assert res["zero"].mean == pytest.approx(20.0)  # one class of five, always
    g = torch.Generator().manual_seed(0)
    rand = evaluate(lambda ep: torch.randint(0, 5, ep.query_y.shape, generator=g), sampler, episodes=600)
    assert abs(rand.mean - 20) < 3 * rand.ci95


def test_prediction_shape_is_checked(omniglot_test):
    with pytest.raises(ValueError, match="expected"):
        evaluate(lambda ep: ep.query_y[..., None], EpisodeSampler(omniglot_test, 5, 1, 2), episodes=4)


def test_same_seed_same_episodes(omniglot_test):
    sampler = EpisodeSampler(omniglot_test, 5, 1, 15)
    seen = {0: [], 1: []}
    for run in (0, 1):
        evaluate(lambda ep, run=run: seen[run].append(ep.query_x.sum().item()) or ep.query_y, sampler, 100, seed=5)
    assert seen[0] == seen[1] and len(seen[0]) == 2
    other = []
    evaluate(lambda ep: other.append(ep.query_x.sum().item()) or ep.query_y, sampler, 100, seed=6)
    assert other != seen[0]


def test_chunks_bound_memory_without_changing_the_episodes(omniglot_test):
    sampler = EpisodeSampler(omniglot_test, 5, 1, 3)
    calls = []

    def predict(ep):  # a prediction that depends on the episode's images, so a changed episode would show
        calls.append(len(ep.query_y))
        return (ep.query_x.flatten(2).sum(-1).long() + ep.support_x.flatten(1).sum(-1, keepdim=True).long()) % 5

    whole = evaluate(predict, sampler, 100, seed=2)
    chunked = evaluate(predict, sampler, 100, seed=2, chunk=7)
    np.testing.assert_array_equal(whole.per_episode, chunked.per_episode)
    assert max(calls[2:]) == 7
    with pytest.raises(ValueError, match="chunk"):
        evaluate(predict, sampler, 100, chunk=0)


def test_paired_difference_is_the_mean_per_episode_difference():
    rng = np.random.default_rng(0)
    hard = rng.uniform(40, 90, 600)  # episode difficulty, shared by both methods
    better = hard + 1.0 + rng.normal(0, 1, 600)
    a = EvalResult(*mean_ci95(better), 600, better)
    b = EvalResult(*mean_ci95(hard), 600, hard)
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(a.mean - b.mean) and d.n == 600
    assert d.ci95 < 0.2 < a.ci95  # pairing cancels the shared difficulty: the unpaired CIs overlap, the paired one not
    assert d.significant and d.verdict("A", "B").startswith("A beats B by ") and abs(d.mean - 1.0) < 3 * d.ci95
    same = paired_difference(b, b)
    assert not same.significant and "not distinguishable" in same.verdict("A", "B")
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(a, EvalResult(50.0, 1.0, 10, np.zeros(10)))


def test_validation_scores_fixed_episodes_and_describes_itself(omniglot_test):
    sampler = EpisodeSampler(omniglot_test, 5, 1, 2)
    val = Validation(sampler, lambda model: (lambda ep: ep.query_y), episodes=20, every=5)
    assert val(torch.nn.Identity()) == 100.0
    described = val.describe()
    assert described["contents"] == omniglot_test.digest and described["episodes"] == 20
    with pytest.raises(ValueError, match="every"):
        Validation(sampler, lambda m: m, every=0)
