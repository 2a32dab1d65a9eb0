"""Few-shot evaluation: accuracy over many test episodes, mean and 95% confidence interval.

    acc = (1/n) sum_i acc_i,     ci95 = t_{n−1, 0.975} · std(acc_i) / sqrt(n)      (≈ 1.96 · std / sqrt(n) at n = 600)

over n >= 600 episodes drawn from the *test* split with a fixed seed (the protocol of Finn et al. 2017
and Snell et al. 2017). The library's predictors run their networks in ``eval()`` mode, so BatchNorm uses
its running statistics from training, not the statistics of the test batch (non-transductive); a query's
prediction never depends on the other queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from metalearn.core.episodes import Episode, EpisodeSampler, make_generator
from metalearn.core.stats import t_interval

# episode -> predicted query labels [tasks, ways*queries], or a dict of them (several methods scored
# on the very same episodes, e.g. two heads on one forward pass of a backbone)
PredictFn = Callable[[Episode], torch.Tensor | dict[str, torch.Tensor]]


@dataclass
class EvalResult:
    mean: float  # accuracy in percent
    ci95: float  # half-width of the 95% confidence interval, percent
    n: int  # number of episodes
    per_episode: np.ndarray  # [n] accuracies in percent

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.ci95:.2f} % ({self.n} episodes)"


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95% CI half-width over the ``n`` values (t quantile with n − 1 degrees of freedom: right at small n,
    e.g. 3 draws, where 1.96 would be 2.2x too narrow)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        raise ValueError("need at least two values for a confidence interval")
    ci = t_interval(values)
    return ci.mean, ci.half_width


def _episode_tensors(episode: Episode) -> tuple[torch.Tensor, ...]:
    """The episode's tensors in field order (no copies, unlike ``dataclasses.astuple``)."""
    return tuple(getattr(episode, f.name) for f in fields(episode))


@torch.no_grad()
def evaluate(predict: PredictFn, sampler: EpisodeSampler, episodes: int = 600, seed: int = 0,
             tasks_per_batch: int = 50, chunk: int | None = None) -> EvalResult | dict[str, EvalResult]:
    """Accuracy of ``predict`` over ``episodes`` episodes from ``sampler`` (seeded, reproducible).

    Episodes are drawn ``tasks_per_batch`` at a time (which fixes them: keep it equal to compare methods episode by
    episode) and predicted ``chunk`` tasks at a time (default: all), which bounds memory without changing them.
    If ``predict`` returns a dict of predictions, the result is a dict of :class:`EvalResult`.
    """
    if episodes < 2 or tasks_per_batch < 1 or (chunk is not None and chunk < 1):
        raise ValueError(f"need episodes >= 2, tasks_per_batch >= 1 and chunk >= 1, got {episodes}, "
                         f"{tasks_per_batch}, {chunk}")
    g = make_generator(seed, sampler.dataset.device)
    accs: dict[str, list[np.ndarray]] = {}
    single = False
    done = 0
    while done < episodes:
        n = min(tasks_per_batch, episodes - done)
        batch = sampler.sample(n, g)
        for lo in range(0, n, chunk or n):
            ep = Episode(*(t[lo:lo + (chunk or n)] for t in _episode_tensors(batch)))
            preds = predict(ep)
            if isinstance(preds, torch.Tensor):
                single, preds = True, {"": preds}
            for name, pred in preds.items():
                if pred.shape != ep.query_y.shape:
                    raise ValueError(f"prediction {name!r} has shape {tuple(pred.shape)}, expected "
                                     f"{tuple(ep.query_y.shape)} ([tasks, ways*queries] labels)")
                accs.setdefault(name, []).append((pred == ep.query_y).float().mean(1).cpu().numpy() * 100)
        done += n
    results = {}
    for name, parts in accs.items():
        per_episode = np.concatenate(parts)
        results[name] = EvalResult(*mean_ci95(per_episode), episodes, per_episode)
    return results[""] if single else results


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the per-episode differences a_i - b_i (percentage points) over episodes both were scored on, its 95%
    CI half-width, and the number of episodes."""

    mean: float
    ci95: float
    n: int

    @property
    def significant(self) -> bool:
        """Whether the 95% CI excludes 0."""
        return abs(self.mean) > self.ci95

    def verdict(self, a: str, b: str) -> str:
        """``"a beats b by 2.10 ± 0.80 points"``, or ``"a and b are not distinguishable (+0.30 ± 0.90 points)"``."""
        if not self.significant:
            return f"{a} and {b} are not distinguishable ({self.mean:+.2f} ± {self.ci95:.2f} points, paired)"
        win, lose = (a, b) if self.mean > 0 else (b, a)
        return f"{win} beats {lose} by {abs(self.mean):.2f} ± {self.ci95:.2f} points (paired, {self.n} episodes)"


def paired_difference(a: EvalResult, b: EvalResult) -> PairedDifference:
    """A - B on the very same test episodes (same sampler and seed): the paired test every "A beats B" rests on.

    The per-episode differences d_i = acc_i(A) - acc_i(B) cancel the episodes' difficulty, so the CI of mean(d) is
    much tighter than comparing the two CIs (which says nothing when they overlap)."""
    if a.n != b.n or a.per_episode.shape != b.per_episode.shape:
        raise ValueError(f"a paired difference needs the same episodes; got {a.n} and {b.n} episodes")
    return PairedDifference(*mean_ci95(a.per_episode - b.per_episode), a.n)


@dataclass(frozen=True)
class Validation:
    """Accuracy on fixed episodes of the *validation* classes: the learning curve and the model selection of a run.

    ``predict(model)`` turns the model into a :data:`PredictFn` (the method's own test-time rule); the same
    ``episodes`` episodes (seed ``seed``) are scored at every check, so two checks differ only by the weights."""

    sampler: EpisodeSampler
    predict: Callable[[nn.Module], PredictFn]
    episodes: int = 200
    every: int = 100
    seed: int = 1
    tasks_per_batch: int = 20
    chunk: int | None = None

    def __post_init__(self) -> None:
        if self.episodes < 2 or self.every < 1:
            raise ValueError(f"validation needs episodes >= 2 and every >= 1, got {self.episodes}, {self.every}")

    def __call__(self, model: nn.Module) -> float:
        result = evaluate(self.predict(model), self.sampler, self.episodes, self.seed, self.tasks_per_batch, self.chunk)
        return cast(EvalResult, result).mean  # a validation rule predicts labels, not a dict of them

    def describe(self) -> dict[str, Any]:
        """What a trained model's key records of its selection: the episodes, their data's digest and the rule."""
        s = self.sampler
        return {"data": s.dataset.name, "contents": s.dataset.digest, "ways": s.ways, "shots": s.shots,
                "queries": s.queries, "episodes": self.episodes, "every": self.every, "seed": self.seed,
                "predict": f"{self.predict.__module__}.{self.predict.__qualname__}"}
