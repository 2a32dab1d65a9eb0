"""Episodic training and prediction shared by the metric-based methods.

A metric-based few-shot model maps an episode to a score for every (query, class) pair,

    scores = model(support_x [T, W*K, C, H, W], support_y [T, W*K], query_x [T, W*Q, C, H, W], ways) -> [T, W*Q, W]

and is trained "like it is tested" (Vinyals et al. 2016): every step draws fresh C-way K-shot tasks from the
training classes and minimises ``model.loss(scores, query_y)`` (cross-entropy unless the model says otherwise).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.core.episodes import Episode, EpisodeSampler, augment_episode
from metalearn.core.evaluate import PredictFn
from metalearn.core.train import RunOptions, Schedule, TrainResult, adam, train


class FewShotModel(Protocol):
    """What a metric-based model provides: ``forward`` maps an episode to scores; ``loss`` is optional
    (cross-entropy on the scores, read as logits, when absent)."""

    def __call__(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                 ways: int) -> torch.Tensor: ...


def embed_support_query(embed: nn.Module, support_x: torch.Tensor,
                        query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) of every support and query image in one batched call of ``embed``:
    ``[T, n, C, H, W], [T, m, C, H, W] -> [T, n, *F], [T, m, *F]`` (``F``: the embedding's shape, e.g. ``(D,)``)."""
    t, n = support_x.shape[:2]
    z = embed(torch.cat([support_x, query_x], 1).flatten(0, 1))
    z = z.view(t, -1, *z.shape[1:])
    return z[:, :n], z[:, n:]


def episode_loss(model: FewShotModel, scores: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
    """``model.loss(scores, query_y)`` if the model defines one, else cross-entropy."""
    if hasattr(model, "loss"):
        return model.loss(scores, query_y)
    return F.cross_entropy(scores.flatten(0, 1), query_y.flatten())


def episode_scores(model: FewShotModel, ep: Episode) -> torch.Tensor:
    """``model`` applied to an :class:`Episode`: scores ``[tasks, ways*queries, ways]``."""
    return model(ep.support_x, ep.support_y, ep.query_x, ep.classes.shape[1])


@dataclass(frozen=True)
class Episodic(Schedule):
    """Episodic training: ``tasks`` episodes per step (Adam, :class:`~metalearn.core.train.Schedule`); ``augment``:
    every support and query image flipped and cropped at random (:func:`augment_episode`)."""

    tasks: int = 1
    augment: bool = False


def train_episodic(model: nn.Module, sampler: EpisodeSampler, steps: int, settings: Episodic,
                   run: RunOptions) -> TrainResult:
    """Adam on ``steps`` batches of ``settings.tasks`` episodes; with ``run.validate``, the model ends with its best
    weights on validation episodes (see :func:`metalearn.core.train.train`)."""
    opt, scheduler = adam(model, steps, settings)

    def loss_fn(m: FewShotModel, ep: Episode) -> tuple[torch.Tensor, dict[str, float]]:
        scores = episode_scores(m, ep)
        acc = (scores.argmax(-1) == ep.query_y).float().mean().item() * 100
        return episode_loss(m, scores, ep.query_y), {"accuracy": acc}

    def batch_fn(step: int, g: torch.Generator) -> Episode:
        ep = sampler.sample(settings.tasks, g)
        return augment_episode(ep, g) if settings.augment else ep

    return train(model, loss_fn, batch_fn, steps, opt, run, scheduler,
                 examples=settings.tasks * sampler.examples_per_task)


def predictor(model: nn.Module, transductive: bool = False) -> PredictFn:
    """The model's predicted query labels.

    Non-transductive (default): ``eval()`` mode, BatchNorm uses its running statistics from training, and a query's
    label never depends on the other queries. ``transductive``: BatchNorm normalises with the statistics of each
    task's own images (train mode, one task per forward pass), the protocol of Sung et al.'s and Finn et al.'s
    evaluation code; it runs on a copy whose running statistics stay untouched (momentum 0)."""
    if not transductive:

        def predict(ep: Episode) -> torch.Tensor:
            model.eval()
            return episode_scores(model, ep).argmax(-1)

        return predict
    batch_stats = copy.deepcopy(model).train()
    for m in batch_stats.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: never updated

    def predict_per_task(ep: Episode) -> torch.Tensor:
        return torch.cat([episode_scores(batch_stats, Episode(*(getattr(ep, f.name)[t:t + 1] for f in fields(ep))))
                          .argmax(-1) for t in range(ep.query_y.shape[0])])

    return predict_per_task
