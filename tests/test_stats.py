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


def _mean_squares(y: np.ndarray) -> tuple[float, float, float]:
    """The crossed design's mean squares, by the textbook sums (loops, independent of stats.crossed_interval)."""
    s, e = y.shape
    grand = sum(sum(row) for row in y) / (s * e)
    seed_means = [sum(row) / e for row in y]
    unit_means = [sum(y[i][j] for i in range(s)) / s for j in range(e)]
    ss_seed = e * sum((m - grand) ** 2 for m in seed_means)
    ss_unit = s * sum((m - grand) ** 2 for m in unit_means)
    ss_res = sum((y[i][j] - seed_means[i] - unit_means[j] + grand) ** 2 for i in range(s) for j in range(e))
    return ss_seed / (s - 1), ss_unit / (e - 1), ss_res / ((s - 1) * (e - 1))


def test_crossed_interval_is_the_anova_formula():
    """Var(d̄) = (MS_seed + MS_unit − MS_res) / (S·E) with Satterthwaite's degrees of freedom, each term checked."""
    y = np.array([[1.0, 4.0, 2.0, 8.0, 5.0], [3.0, 7.0, 3.0, 9.0, 9.0], [0.0, 2.0, 2.0, 5.0, 3.0]])
    ms_seed, ms_unit, ms_res = _mean_squares(y)
    assert ms_seed > ms_res and ms_unit > ms_res  # the full sum is the largest: every term counts
    var = ms_seed + ms_unit - ms_res
    df = var ** 2 / (ms_seed ** 2 / 2 + ms_unit ** 2 / 4 + ms_res ** 2 / 8)
    for level in (0.95, 0.9):
        ci = stats.crossed_interval(y, level)
        assert ci.mean == pytest.approx(y.mean()) and ci.df == pytest.approx(df)
        assert ci.half_width == pytest.approx(sps.t.ppf(0.5 + level / 2, df) * np.sqrt(var / 15))
        assert (ci.n, ci.seeds, ci.level) == (5, 3, level)
    # a residual larger than both main effects: the interval is never narrower than the larger main effect alone
    noisy = np.array([[0.0, 9.0, 1.0], [9.0, 0.0, 8.0]])
    ms_seed, ms_unit, ms_res = _mean_squares(noisy)
    assert ms_seed + ms_unit - ms_res < max(ms_seed, ms_unit)
    ci = stats.crossed_interval(noisy)
    var = max(ms_seed, ms_unit)
    df = var ** 2 / (ms_seed ** 2 + ms_unit ** 2 / 2 + ms_res ** 2 / 2)
    assert ci.half_width == pytest.approx(sps.t.ppf(0.975, df) * np.sqrt(var / 6))
    # a residual above the seeds' mean square: the units' alone, larger than the sum, sets the width
    units = np.array([[0.0, 10.0, 0.0], [1.0, 9.0, 2.0]])
    ms_seed, ms_unit, ms_res = _mean_squares(units)
    assert ms_seed + ms_unit - ms_res < ms_unit and ms_seed < ms_unit
    df = ms_unit ** 2 / (ms_seed ** 2 + ms_unit ** 2 / 2 + ms_res ** 2 / 2)
    assert stats.crossed_interval(units).half_width == pytest.approx(sps.t.ppf(0.975, df) * np.sqrt(ms_unit / 6))
    # the degrees of freedom do not depend on the scale of the differences (points or fractions)
    assert stats.crossed_interval(y * 0.001).df == pytest.approx(stats.crossed_interval(y).df)
    two = stats.crossed_interval(np.array([[1.0, 2.0], [2.0, 4.0]]))  # two seeds on two units is enough
    assert (two.n, two.seeds, two.mean) == (2, 2, 2.25)
    flat = stats.crossed_interval(np.ones((2, 3)))  # no spread at all: a zero-width interval, df S·E − 1
    assert (flat.half_width, flat.df) == (0.0, 5.0)
    with pytest.raises(ValueError, match="at least 2 units"):
        stats.crossed_interval(np.ones((2, 1)))
    with pytest.raises(ValueError, match="seeds, units"):
        stats.crossed_interval(np.ones((2, 2, 2)))


def test_interval_bounds_and_levels():
    ci = stats.Interval(1.5, 0.25, 10.0, 11)
    assert (ci.low, ci.high, ci.seeds, ci.level, str(ci)) == (1.25, 1.75, 1, 0.95, "+1.50 ± 0.25")
    x = np.array([1.0, 2.0, 4.0, 7.0])
    assert stats.t_interval(x, 0.9).half_width == pytest.approx(sps.t.ppf(0.95, 3) * x.std(ddof=1) / 2)
    assert stats.t_interval(x.reshape(2, 2)).n == 4  # any shape, read flat
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence level"):
            stats.t_interval(x, level)


def test_beats_and_equivalence_at_their_boundaries():
    d = np.array([0.5, 1.5, 1.0, 2.0, 0.0])
    ci95 = stats.crossed_interval(d)
    assert stats.beats(d - ci95.low)[0] == "neither"  # the interval's low end exactly at 0 is no win
    assert stats.beats(d - ci95.high)[0] == "neither"
    assert stats.beats(d) == ("A", ci95)
    ci90 = stats.crossed_interval(d, 0.9)
    assert stats.equivalent(d, margin=ci90.low)[0] == "different"  # the low end on the margin: wholly outside it
    assert stats.equivalent(-d, margin=ci90.low)[0] == "different"
    assert stats.equivalent(d, margin=ci90.high)[0] == "inconclusive"  # the high end on the margin: not inside
    assert stats.equivalent(d, margin=ci90.high * 1.0001)[0] == "equivalent"
    assert stats.equivalent(d - d.mean(), margin=ci90.half_width)[0] == "inconclusive"
    assert stats.equivalent(d, margin=1.0, alpha=0.025)[1].level == pytest.approx(0.95)


def test_log_budget_fit_extrapolates_the_second_half_and_reads_the_trend_from_the_last_third():
    rng = np.random.default_rng(4)
    for n in (4, 6, 9, 12, 16):
        x = np.cumsum(rng.uniform(50, 150, n))
        y = 40 + 4 * np.log(x) + rng.normal(0, 0.5, n)
        fit = stats.log_budget_fit(x, y, gap=2.0)
        half, third = n // 2, max(3, n // 3)
        b = np.polyfit(np.log(x[half:]), y[half:], 1)[0]
        reg = sps.linregress(np.log(x[-third:]), y[-third:])
        width = sps.t.ppf(0.975, third - 2) * reg.stderr
        assert fit["points_per_doubling"] == pytest.approx(b * np.log(2))
        assert fit["window"] == (x[half], x[-1]) and fit["last"] == x[-1]
        assert fit["factor"] == pytest.approx(np.exp(2.0 / b)) and fit["needed"] == pytest.approx(x[-1] * fit["factor"])
        assert fit["slope"] == pytest.approx(reg.slope * np.log(2))
        assert fit["slope_ci95"] == pytest.approx(width * np.log(2))
        assert fit["rising"] == bool(reg.slope - width > 0)
        assert fit["trend"] == stats.trend(reg.slope * np.log(2), width * np.log(2))
    # an exact log-linear curve: 3 points per e-fold, rising
    x = 2.0 ** np.arange(9)
    fit = stats.log_budget_fit(x, 50 + 3 * np.log(x), gap=3.0)
    assert fit["points_per_doubling"] == pytest.approx(3 * np.log(2)) and fit["factor"] == pytest.approx(np.e)
    assert fit["window"] == (16.0, 256.0) and fit["rising"] and fit["trend"] == "rising"
    # a falling curve never gets there
    fit = stats.log_budget_fit(x, 50 - np.log(x), gap=1.0)
    assert fit["factor"] == float("inf") and fit["needed"] == float("inf") and not fit["rising"]
    flat = stats.log_budget_fit(x, np.full(9, 70.0), gap=1.0)
    assert flat["factor"] == float("inf") and flat["trend"] == "plateau"
    with pytest.raises(ValueError, match="at least 4 validation checks"):
        stats.log_budget_fit(x[:3], x[:3], gap=1.0)
    with pytest.raises(ValueError, match="at least 4 validation checks"):
        stats.log_budget_fit(x, x[:8], gap=1.0)


def test_slope_and_trend():
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 3.0, 4.0, 7.0])
    reg = sps.linregress(x, y)
    slope, width = stats.slope_ci95(x, y)
    assert slope == pytest.approx(reg.slope) and width == pytest.approx(sps.t.ppf(0.975, 2) * reg.stderr)
    assert stats.slope_ci95(x[:2], y[:2]) == (0.0, float("inf"))
    assert stats.slope_ci95(np.ones(4), y) == (0.0, float("inf"))
    assert stats.PLATEAU_SLOPE == 0.5
    assert stats.trend(1.0, 0.99) == "rising" and stats.trend(1.0, 1.0) == "undetermined"
    assert stats.trend(0.2, 0.29) == "plateau" and stats.trend(0.2, 0.3) == "undetermined"
    assert stats.trend(-1.0, 1.4) == "plateau" and stats.trend(-1.0, 1.5) == "undetermined"


def test_two_values_are_enough_and_numbers_of_any_numeric_type_read_as_floats():
    ci = stats.t_interval(np.array([1.0, 3.0]))
    assert (ci.mean, ci.df, ci.n) == (2.0, 1, 2) and ci.half_width == pytest.approx(sps.t.ppf(0.975, 1) * 1.0)
    curve = stats.log_budget_fit(np.array([10, 20, 40, 80, 160, 320], dtype=object),
                                 np.array([50, 52, 54, 56, 58, 60], dtype=object), gap=2.0)
    assert curve["points_per_doubling"] == pytest.approx(2.0) and curve["factor"] == pytest.approx(2.0)


def test_the_rules_read_the_interval_at_its_boundaries(monkeypatch):
    """An interval touching 0 is no win; one touching the margin is not inside it, and lies wholly outside it."""
    def fixed(mean: float, half: float):
        return lambda differences, level=0.95: stats.Interval(mean, half, 10.0, 11, level=level)

    for (mean, half), verdict in {(0.5, 0.5): "neither", (-0.5, 0.5): "neither", (0.5, 0.25): "A",
                                  (-0.5, 0.25): "B"}.items():
        monkeypatch.setattr(stats, "crossed_interval", fixed(mean, half))
        assert stats.beats(np.zeros(3))[0] == verdict, (mean, half)
    for (mean, half), verdict in {(0.0, 1.0): "inconclusive", (0.5, 0.5): "inconclusive", (-0.5, 0.5): "inconclusive",
                                  (0.25, 0.5): "equivalent", (1.5, 0.5): "different", (-1.5, 0.5): "different"}.items():
        monkeypatch.setattr(stats, "crossed_interval", fixed(mean, half))
        assert stats.equivalent(np.zeros(3), margin=1.0)[0] == verdict, (mean, half)
    monkeypatch.undo()
    d = np.array([0.5, 1.5, 1.0, 2.0, 0.0])
    assert stats.beats(d, 0.9)[1] == stats.crossed_interval(d, 0.9)


def test_the_trend_reads_the_slope_against_its_interval_in_the_same_units():
    """Rising where the last third's slope exceeds its 95% half-width (here by a factor 1.5, in any unit)."""
    t = np.arange(6.0)
    # the last three points rise by 10 per e-fold, the middle one bumped by δ: slope 10, half-width t·δ/√3
    delta = 10 / (1.5 * sps.t.ppf(0.975, 1) / np.sqrt(3))
    y = np.array([0.0, 5.0, 10.0, 0.0, 10.0 + delta, 20.0])
    fit = stats.log_budget_fit(np.exp(t), y, gap=1.0)
    assert fit["slope"] / fit["slope_ci95"] == pytest.approx(1.5)
    assert fit["rising"] and fit["trend"] == "rising"
    # a slowly rising exact curve (0.5 points per e-fold): still rising, finite budget
    slow = stats.log_budget_fit(np.exp(t), 60 + 0.5 * t, gap=1.0)
    assert slow["rising"] and slow["factor"] == pytest.approx(np.exp(2.0))
    with np.errstate(over="ignore"):  # the fitted slope of a flat curve is 0 up to rounding: exp(1 / 1e-15)
        flat = stats.log_budget_fit(np.exp(t), np.full(6, 60.0), gap=1.0)  # no slope, no spread: never rising
    assert (flat["slope"], flat["slope_ci95"], flat["rising"]) == (0.0, 0.0, False)
    assert flat["factor"] == float("inf")
