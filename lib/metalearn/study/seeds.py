"""Comparisons over training seeds: two methods, each trained once per seed, scored on the very same test units.

With ``S`` training seeds of each method scored on the same ``n`` episodes, the differences
``d[s, i] = acc_i(A, seed s) − acc_i(B, seed s)`` form a crossed seeds × episodes table; their mean's interval
(:func:`metalearn.core.stats.crossed_interval`) counts both the spread between training runs and the episodes'
noise, so that "A beats B" is a claim about the methods, not about one pair of runs. One seed gives the paired
episode interval of :func:`metalearn.core.evaluate.paired_difference`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from metalearn.core.evaluate import EvalResult, PairedDifference
from metalearn.core.stats import crossed_interval


@dataclass(frozen=True)
class SeededDifference(PairedDifference):
    """A − B paired seed by seed and episode by episode: ``mean``, ``ci95`` (over ``seeds`` × ``n`` episodes)."""

    seeds: int = 1

    def verdict(self, a: str, b: str) -> str:
        """As :meth:`PairedDifference.verdict`, naming the training seeds the interval is over."""
        over = f"paired, {self.seeds} training seeds × {self.n} episodes"
        if not self.significant:
            return f"{a} and {b} are not distinguishable ({self.mean:+.2f} ± {self.ci95:.2f} points, {over})"
        win, lose = (a, b) if self.mean > 0 else (b, a)
        return f"{win} beats {lose} by {abs(self.mean):.2f} ± {self.ci95:.2f} points ({over})"


def stack_seeds(results: Mapping[int, EvalResult]) -> np.ndarray:
    """``{seed: result}`` → the per-episode scores ``[seeds, episodes]``, seeds in sorted order."""
    if not results:
        raise ValueError("no training seeds to stack")
    sizes = {r.per_episode.shape for r in results.values()}
    if len(sizes) != 1:
        raise ValueError(f"every seed must be scored on the same episodes, got shapes {sorted(sizes)}")
    return np.stack([results[s].per_episode for s in sorted(results)]).astype(float)


def seeded_difference(differences: np.ndarray) -> SeededDifference:
    """A − B from its paired differences ``[seeds, units]`` (or ``[units]``: one seed): the crossed interval."""
    d = np.atleast_2d(np.asarray(differences, dtype=float))
    ci = crossed_interval(d)
    return SeededDifference(ci.mean, ci.half_width, d.shape[1], d.shape[0])


def paired_over_seeds(a: Mapping[int, EvalResult], b: Mapping[int, EvalResult]) -> SeededDifference:
    """A − B from each method's ``{training seed: result}`` on the same episodes, seed s against seed s."""
    if set(a) != set(b):
        raise ValueError(f"pairing by seed needs the same training seeds on both sides, got {sorted(a)} and "
                         f"{sorted(b)}")
    da, db = stack_seeds(a), stack_seeds(b)
    if da.shape != db.shape:
        raise ValueError(f"a paired difference needs the same episodes, got {da.shape[1]} and {db.shape[1]}")
    return seeded_difference(da - db)


def pool_seeds(results: Mapping[int, EvalResult]) -> EvalResult:
    """One method's accuracy over its training seeds × episodes: the grand mean, its 95% half-width (crossed), the
    episodes, and each episode's score averaged over the seeds."""
    scores = stack_seeds(results)
    ci = crossed_interval(scores)
    return EvalResult(ci.mean, ci.half_width, scores.shape[1], scores.mean(0))
