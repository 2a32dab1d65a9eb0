"""Comparisons over training seeds: seed s paired with seed s on the same episodes, the crossed interval."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn.core.evaluate import EvalResult, mean_ci95, paired_difference
from metalearn.core.stats import crossed_interval
from metalearn.study.seeds import paired_over_seeds, pool_seeds, seeded_difference, stack_seeds


def _result(values: np.ndarray) -> EvalResult:
    return EvalResult(*mean_ci95(values), len(values), values)


def test_one_seed_is_the_paired_episode_difference():
    rng = np.random.default_rng(0)
    a, b = _result(rng.normal(60, 10, 200)), _result(rng.normal(58, 10, 200))
    one = paired_over_seeds({0: a}, {0: b})
    ref = paired_difference(a, b)
    assert (one.mean, one.n, one.seeds) == pytest.approx((ref.mean, ref.n, 1))
    assert one.ci95 == pytest.approx(ref.ci95)


def test_seeds_pair_by_seed_and_their_spread_widens_the_interval():
    rng = np.random.default_rng(1)
    episodes = rng.normal(0, 10, 300)  # the episodes' difficulty, shared by every run
    shift = {0: -3.0, 1: 0.0, 2: 3.0}  # seed-to-seed spread of A's runs
    a = {s: _result(60 + episodes + shift[s] + rng.normal(0, 1, 300)) for s in shift}
    b = {s: _result(59 + episodes + rng.normal(0, 1, 300)) for s in shift}
    d = paired_over_seeds(a, b)
    stacked = np.stack([a[s].per_episode - b[s].per_episode for s in sorted(shift)])
    assert d.mean == pytest.approx(stacked.mean())
    assert d.ci95 == pytest.approx(crossed_interval(stacked).half_width)
    assert (d.n, d.seeds) == (300, 3)
    # seed 0's pair alone would be far narrower: the seeds' spread is in the interval
    assert d.ci95 > 3 * paired_difference(a[0], b[0]).ci95
    assert "3 training seeds × 300 episodes" in d.verdict("A", "B")
    # the order the seeds come in does not matter: seed s always meets seed s
    assert paired_over_seeds(dict(reversed(list(a.items()))), b).mean == pytest.approx(d.mean)


def test_mismatched_seeds_or_episodes_are_refused():
    r = _result(np.arange(10.0))
    with pytest.raises(ValueError, match="same training seeds"):
        paired_over_seeds({0: r, 1: r}, {0: r, 2: r})
    with pytest.raises(ValueError, match="same episodes"):
        paired_over_seeds({0: r}, {0: _result(np.arange(12.0))})
    with pytest.raises(ValueError, match="same episodes"):
        stack_seeds({0: r, 1: _result(np.arange(12.0))})
    with pytest.raises(ValueError, match="no training seeds"):
        stack_seeds({})


def test_pooled_seeds_carry_the_crossed_interval_and_the_episode_means():
    rng = np.random.default_rng(2)
    runs = {s: _result(rng.normal(70 + s, 8, 100)) for s in (0, 1, 2)}
    pooled = pool_seeds(runs)
    scores = np.stack([runs[s].per_episode for s in (0, 1, 2)])
    ci = crossed_interval(scores)
    assert (pooled.mean, pooled.ci95, pooled.n) == pytest.approx((ci.mean, ci.half_width, 100))
    assert pooled.per_episode == pytest.approx(scores.mean(0))
    assert pooled.ci95 > max(r.ci95 for r in runs.values()) / np.sqrt(3)  # never just the episodes' noise


def test_a_difference_matrix_gives_the_crossed_interval_and_one_row_the_paired_one():
    rng = np.random.default_rng(3)
    d = rng.normal(1, 5, (3, 50))
    seeded = seeded_difference(d)
    assert (seeded.mean, seeded.ci95, seeded.n, seeded.seeds) == pytest.approx(
        (d.mean(), crossed_interval(d).half_width, 50, 3))
    one = seeded_difference(d[0])
    assert (one.seeds, one.n) == (1, 50) and one.ci95 == pytest.approx(mean_ci95(d[0])[1])
