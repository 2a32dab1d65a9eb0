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


# The equivalence margins of every "A matches B" verdict, one home for the chapters and the summary's claims:
# points of accuracy by data set (±1 on Omniglot, ±2 on CIFAR-FS), and for a sinusoid MSE ±10% of the comparator's
# value. (An absolute 0.05 MSE was out of reach: the 90% half-width of a difference is about 0.32 at 600 tasks.)
MARGINS = {"omniglot": 1.0, "cifar_fs": 2.0}
SINUSOID_RELATIVE_MARGIN = 0.10


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


PLATEAU_SLOPE = 0.5  # points per doubling of the budget below which a validation curve is a plateau


def log_budget_fit(x: np.ndarray, accuracy: np.ndarray, gap: float) -> dict:
    """How much more budget ``x`` (training seconds or steps, > 0, increasing) a learning curve asks for to gain
    ``gap`` more points of ``accuracy`` (its validation checks).

    Fits ``accuracy = a + b ln(x)`` to the second half of the checks and solves for the ``x`` at which the fit gains
    ``gap`` more points. Assumptions, to state beside the answer: accuracy keeps growing log-linearly (it saturates
    eventually, so this is a lower bound on the budget), the same recipe is kept (a cosine schedule stretched over the
    longer run), and the validation-to-test offset stays. Return ``points_per_doubling`` (b ln 2), ``window`` (the
    fit's first and last ``x``), ``last`` (the run's ``x``), ``needed`` and ``factor`` (needed/last; inf when the fit
    does not grow), and the evidence that the curve still rises: ``slope`` ± ``slope_ci95``, points per doubling
    fitted to the last third of the checks (at least 3) with its 95% t interval, and ``trend``: "rising" (that
    interval above 0), "plateau" (below :data:`PLATEAU_SLOPE` points per doubling: a budget 1000 times larger would
    gain under 5 points; the recipe or protocol is the suspect, not the budget) or "undetermined" (the interval
    covers both: too few or too noisy checks to tell). Only a rising curve's extrapolation is a budget
    (``rising``)."""
    x, accuracy = np.asarray(x, float), np.asarray(accuracy, float)
    if len(x) < 4 or len(x) != len(accuracy):
        raise ValueError(f"need at least 4 validation checks to extrapolate, got {len(x)}")
    half = len(x) // 2
    b, _a = np.polyfit(np.log(x[half:]), accuracy[half:], 1)
    last = float(x[-1])
    factor = float(np.exp(gap / b)) if b > 0 else float("inf")
    third = -max(3, len(x) // 3)
    slope, width = slope_ci95(np.log(x[third:]), accuracy[third:])
    return {"points_per_doubling": float(b * np.log(2)), "window": (float(x[half]), last), "last": last,
            "needed": last * factor, "factor": factor, "slope": slope * np.log(2), "slope_ci95": width * np.log(2),
            "rising": bool(slope - width > 0), "trend": trend(slope * np.log(2), width * np.log(2))}


def trend(slope: float, half_width: float) -> str:
    """"rising", "plateau" or "undetermined" for a slope (points per doubling) and its 95% half-width."""
    if slope - half_width > 0:
        return "rising"
    return "plateau" if slope + half_width < PLATEAU_SLOPE else "undetermined"


def slope_ci95(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The least-squares slope of ``y`` on ``x`` and its 95% half-width (t quantile, n − 2 degrees of freedom; inf
    with fewer than 3 points or no spread in ``x``)."""
    n = len(x)
    sxx = float(((x - x.mean()) ** 2).sum())
    if n < 3 or sxx == 0:
        return 0.0, float("inf")
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    residual = y - y.mean() - slope * (x - x.mean())
    se = float(np.sqrt((residual ** 2).sum() / (n - 2) / sxx))
    return slope, float(stats.t.ppf(0.975, n - 2)) * se
