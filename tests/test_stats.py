"""The intervals and tests the verdicts rest on: t quantiles at small n, seeds × episodes crossed, TOST."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from metalearn.core import stats


def test_t_interval_uses_the_t_quantile():
    x = np.array([1.0, 2.0, 4.0])
    ci = stats.t_interval(x)
    assert ci.half_width == pytest.approx(sps.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3))
    assert ci.half_width > 1.96 * x.std(ddof=1) / np.sqrt(3) * 2  # 4.30 / 1.96: the normal one is 2.2x too narrow
    assert (ci.df, ci.n, ci.seeds) == (2, 3, 1)
    with pytest.raises(ValueError, match="at least two values"):
        stats.t_interval(np.array([1.0]))


def test_one_seed_is_the_paired_t_interval_and_seed_spread_widens_it():
    rng = np.random.default_rng(0)
    episodes = rng.normal(0, 10, 600)
    one = stats.crossed_interval(episodes[None])
    assert one == stats.t_interval(episodes)
    # three seeds whose runs differ by a few points: the interval must cover that spread, not just episodes'
    seeds = episodes[None] + np.array([[-3.0], [0.0], [3.0]]) + rng.normal(0, 1, (3, 600))
    crossed = stats.crossed_interval(seeds)
    naive = stats.t_interval(seeds.ravel())
    assert crossed.seeds == 3 and crossed.half_width > 3 * naive.half_width
    assert crossed.df < 10  # few seeds: few degrees of freedom


def test_crossed_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(400):
        y = 0.5 + rng.normal(0, 1.5, (3, 1)) + rng.normal(0, 5, (1, 200)) + rng.normal(0, 2, (3, 200))
        ci = stats.crossed_interval(y)
        covered += ci.low < 0.5 < ci.high
    assert 0.91 <= covered / 400 <= 0.99


def test_beats_flips_with_the_sign_and_reads_no_win_from_noise():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 5, 600)
    assert stats.beats(noise - noise.mean() + 2)[0] == "A"
    assert stats.beats(noise - noise.mean() - 2)[0] == "B"
    assert stats.beats(noise - noise.mean())[0] == "neither"


def test_equivalence_needs_the_90_percent_interval_inside_the_margin():
    rng = np.random.default_rng(3)
    d = rng.normal(0, 5, 600)
    d = d - d.mean() + 0.2
    verdict, ci = stats.equivalent(d, margin=1.0)
    assert verdict == "equivalent" and ci.level == pytest.approx(0.9)
    assert stats.equivalent(d, margin=0.3)[0] == "inconclusive"  # covers 0 *and* the margin: no match read from it
    assert stats.equivalent(d + 3, margin=1.0)[0] == "different"
    few = d[:8]  # the same mean difference on 8 episodes is not enough to claim a match
    assert stats.equivalent(few - few.mean() + 0.2, margin=1.0)[0] == "inconclusive"
    with pytest.raises(ValueError, match="margin is > 0"):
        stats.equivalent(d, margin=0)
