"""Evaluation: confidence intervals, seeded episodes, perfect and chance predictors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metalearn.episodes import EpisodeSampler
from metalearn.evaluate import evaluate, mean_ci95
from scipy import stats


def test_mean_ci95_matches_normal_interval():
    x = np.random.default_rng(0).normal(70, 10, 600)
    mean, ci = mean_ci95(x)
    lo, hi = stats.norm.interval(0.95, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean())
    assert ci == pytest.approx((hi - lo) / 2, rel=1e-3)
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
