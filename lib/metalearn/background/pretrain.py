"""Pre-training & fine-tuning: the non-episodic baseline every meta-learner must beat.

1. Pre-train f_theta + a linear head on ordinary mini-batches of *all* meta-train classes
   (cross-entropy over e.g. 4112 Omniglot classes).
2. At test time freeze f_theta and, for each episode, fit a new linear head W, b on the support set:
       p(y = k | x) = softmax_k(w_k^T f(x) + b_k),   min_{W,b}  sum_{(x,y) in S} -log p(y | x)
3. Or skip the fitting: classify a query by its nearest class centroid c_k = mean_{(x,y) in S_k} f(x)
   (the Prototypical-Network rule on pretrained features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.core.batchnorm import batch_statistics
from metalearn.core.episodes import ClassDataset, Episode, augment_images
from metalearn.core.evaluate import PredictFn
from metalearn.core.prototypes import prototype_logits
from metalearn.core.train import RunOptions, Schedule, TrainResult, adam, train


@dataclass(frozen=True)
class Pretraining(Schedule):
    """Ordinary mini-batches of ``batch_size`` images of all training classes; Adam with a cosine-annealed learning
    rate (``halve_lr_every`` must stay 0); ``augment``: random flips and crops."""

    cosine: bool = True
    batch_size: int = 128
    augment: bool = False


def pretrain(model: nn.Module, dataset: ClassDataset, steps: int, settings: Pretraining,
             run: RunOptions) -> TrainResult:
    """Train ``model`` (e.g. Conv-4 + a linear head over ``dataset.num_classes``) on mini-batches of all classes of
    ``dataset``; ``run.validate``: see :func:`metalearn.core.train.train`."""
    batch_size, augment = settings.batch_size, settings.augment
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if settings.halve_lr_every or not settings.cosine:
        raise ValueError("pre-training anneals the learning rate with a cosine; halve_lr_every must be 0")
    opt, scheduler = adam(model, steps, settings)
    images = dataset.images.flatten(0, 1)  # [classes*per_class, C, H, W] uint8

    def batch_fn(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(images.shape[0], (batch_size,), generator=g, device=images.device)
        x = images[idx].float().div_(255)
        return (augment_images(x, g) if augment else x), idx // dataset.per_class

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        logits = m(batch[0])
        acc = (logits.argmax(1) == batch[1]).float().mean().item() * 100
        return F.cross_entropy(logits, batch[1]), {"accuracy": acc}

    return train(model, loss_fn, batch_fn, steps, opt, run, scheduler, examples=batch_size)


@torch.no_grad()
def embed_episode(backbone: nn.Module, episode: Episode, transductive: bool = False,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Support and query features ``[tasks, n, D]``: with the backbone in eval mode (non-transductive BN: running
    statistics), or ``transductive``, each task's support set normalised with its own batch statistics and its
    queries with theirs, as the gradient-based methods are scored (:mod:`metalearn.core.batchnorm`)."""
    backbone.eval()
    t, n_s = episode.support_x.shape[:2]
    if transductive:
        with batch_statistics(backbone, groups=t):
            fs, fq = (backbone(x.flatten(0, 1)).view(t, -1, backbone.feature_dim)
                      for x in (episode.support_x, episode.query_x))
        return fs, fq
    x = torch.cat([episode.support_x, episode.query_x], 1).flatten(0, 1)
    f = backbone(x).view(t, -1, backbone.feature_dim)
    return f[:, :n_s], f[:, n_s:]


def nearest_centroid(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                     ways: int) -> torch.Tensor:
    """Label of the nearest (Euclidean) support centroid per query: ``[tasks, n_query]`` (ProtoNet's rule)."""
    return prototype_logits(support, support_y, query, ways).argmax(-1)


def fit_linear_head(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int,
                    steps: int = 100, lr: float = 0.01) -> torch.Tensor:
    """Fit a fresh linear head per task on support features (Adam, all tasks at once); predict queries.

    ``support [tasks, n_support, D]``, ``query [tasks, n_query, D]`` -> labels ``[tasks, n_query]``.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    t, n, d = support.shape
    w = torch.zeros(t, d, ways, device=support.device, requires_grad=True)
    b = torch.zeros(t, 1, ways, device=support.device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = support @ w + b  # [tasks, n_support, ways]
            # the sum over tasks of each task's mean loss: Adam is per-parameter, so tasks stay independent
            loss = F.cross_entropy(logits.flatten(0, 1), support_y.flatten(), reduction="sum") / n
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (query @ w + b).argmax(-1).detach()


def centroid_predictor(model: nn.Module) -> PredictFn:
    """Nearest-centroid labels on the features of ``model.backbone`` (a pre-trained :class:`Classifier`): the
    rule the baseline's checkpoints are selected with on validation episodes."""

    def predict(ep: Episode) -> torch.Tensor:
        fs, fq = embed_episode(cast(nn.Module, model.backbone), ep)
        return nearest_centroid(fs, ep.support_y, fq, ep.classes.shape[1])

    return predict


def baseline_predictors(backbone: nn.Module, finetune_steps: int = 100, finetune_lr: float = 0.01,
                        transductive: bool = False) -> PredictFn:
    """Both test-time rules on one forward pass: ``{"pretrain_finetune": ..., "nearest_centroid": ...}`` (BatchNorm
    on running statistics, or ``transductive``: on each task's batch, see :func:`embed_episode`)."""

    def predict(ep: Episode) -> dict[str, torch.Tensor]:
        fs, fq = embed_episode(backbone, ep, transductive)
        ways = ep.classes.shape[1]
        return {"pretrain_finetune": fit_linear_head(fs, ep.support_y, fq, ways, finetune_steps, finetune_lr),
                "nearest_centroid": nearest_centroid(fs, ep.support_y, fq, ways)}

    return predict
