"""Few-shot evaluation: accuracy over many test episodes, mean and 95% confidence interval.

    acc = (1/n) sum_i acc_i,     ci95 = 1.96 * std(acc_i) / sqrt(n)

over n >= 600 episodes drawn from the *test* split with a fixed seed (the protocol of Finn et al. 2017
and Snell et al. 2017). The library's predictors run their networks in ``eval()`` mode, so BatchNorm uses
its running statistics from training, not the statistics of the test batch (non-transductive); a query's
prediction never depends on the other queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .episodes import Episode, EpisodeSampler, make_generator

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
    """Mean and 95% CI half-width (normal approximation, 1.96 standard errors)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        raise ValueError("need at least two values for a confidence interval")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


@torch.no_grad()
def evaluate(predict: PredictFn, sampler: EpisodeSampler, episodes: int = 600, seed: int = 0,
             tasks_per_batch: int = 50) -> EvalResult | dict[str, EvalResult]:
    """Accuracy of ``predict`` over ``episodes`` episodes from ``sampler`` (seeded, reproducible).

    If ``predict`` returns a dict of predictions, the result is a dict of :class:`EvalResult`.
    """
    if episodes < 2 or tasks_per_batch < 1:
        raise ValueError(f"need episodes >= 2 and tasks_per_batch >= 1, got {episodes}, {tasks_per_batch}")
    g = make_generator(seed, sampler.dataset.device)
    accs: dict[str, list[np.ndarray]] = {}
    single = False
    done = 0
    while done < episodes:
        n = min(tasks_per_batch, episodes - done)
        ep = sampler.sample(n, g)
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
