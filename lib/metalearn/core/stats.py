"""Intervals and the two tests every verdict of the study rests on.

A mean over n test episodes (or assays, or draws) has the interval

    mean ± t_{n−1, 1−α/2} · s / √n                     (t quantiles: right at small n, ≈ 1.96 s/√n at n = 600)

A paired difference of A and B over several *training seeds* scored on the same test episodes is a crossed design,
d_{s,e} = μ + a_s + b_e + ε_{s,e} (a_s: the seed's training run, b_e: the episode's difficulty), and its grand mean
has the variance

    Var(d̄) = σ²_seed / S + σ²_episode / E + σ² / (S·E) = (MS_seed + MS_episode − MS_residual) / (S·E)

from the two-way ANOVA's mean squares, with Satterthwaite's degrees of freedom. With one seed it is the paired t
interval over episodes; with several, a second training run that moves the difference widens it.

"A beats B": the 95% interval of the difference excludes 0. "A matches B" within a margin m: two one-sided tests
(TOST) at α = 5%, i.e. the 90% interval lies inside (−m, +m). A non-significant difference is never read as a match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval ``mean ± half_width`` at ``level``, with the degrees of freedom of its t
    quantile and what it is over: ``n`` units (episodes, assays, draws) of ``seeds`` training runs."""

    mean: float
    half_width: float
    df: float
    n: int
    seeds: int = 1
    level: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.half_width:.2f}"


def _t(level: float, df: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"a confidence level lies in (0, 1), got {level}")
    return float(stats.t.ppf(0.5 + level / 2, df))


def t_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """The mean of ``values`` ``[n]`` and its t interval (``n − 1`` degrees of freedom)."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size < 2:
        raise ValueError(f"need at least two values for a confidence interval, got {values.size}")
    sem = values.std(ddof=1) / np.sqrt(values.size)
    return Interval(float(values.mean()), _t(level, values.size - 1) * float(sem), values.size - 1, values.size,
                    level=level)


def crossed_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """The grand mean of ``values [seeds, n]`` (every seed scored on the same ``n`` units) and its interval from the
    crossed two-way ANOVA (see the module docstring); one seed (``[n]`` or ``[1, n]``) gives :func:`t_interval`."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1 or values.shape[0] == 1:
        return t_interval(values.ravel(), level)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"expected [seeds, units] with at least 2 units, got shape {values.shape}")
    s, e = values.shape
    grand = values.mean()
    ms_seed = e * ((values.mean(1) - grand) ** 2).sum() / (s - 1)
    ms_unit = s * ((values.mean(0) - grand) ** 2).sum() / (e - 1)
    resid = values - values.mean(1, keepdims=True) - values.mean(0, keepdims=True) + grand
    ms_res = (resid ** 2).sum() / ((s - 1) * (e - 1))
    # never narrower than either main effect alone would make it
    var_sum = max(ms_seed + ms_unit - ms_res, ms_seed, ms_unit)
    denom = ms_seed ** 2 / (s - 1) + ms_unit ** 2 / (e - 1) + ms_res ** 2 / ((s - 1) * (e - 1))
    df = var_sum ** 2 / denom if denom > 0 else float(s * e - 1)
    half = _t(level, df) * float(np.sqrt(var_sum / (s * e)))
    return Interval(float(grand), half, float(df), e, s, level)


def beats(differences: np.ndarray, level: float = 0.95) -> tuple[str, Interval]:
    """The rule for "A beats B" on paired differences A − B (``[n]`` or ``[seeds, n]``): ``"A"`` if the interval
    lies above 0, ``"B"`` if below, ``"neither"`` if it covers 0; with the interval."""
    ci = crossed_interval(differences, level)
    return ("A" if ci.low > 0 else "B" if ci.high < 0 else "neither"), ci


def equivalent(differences: np.ndarray, margin: float, alpha: float = 0.05) -> tuple[str, Interval]:
    """The rule for "A matches B" within ±``margin`` (TOST at ``alpha``): ``"equivalent"`` if the (1 − 2α) interval
    of A − B lies inside (−margin, +margin), ``"different"`` if it lies wholly outside, ``"inconclusive"`` else
    (more episodes or seeds would decide); with that interval."""
    if not margin > 0:
        raise ValueError(f"an equivalence margin is > 0, got {margin}")
    ci = crossed_interval(differences, 1 - 2 * alpha)
    if -margin < ci.low and ci.high < margin:
        return "equivalent", ci
    if ci.low >= margin or ci.high <= -margin:
        return "different", ci
    return "inconclusive", ci
