"""Siamese networks (Koch, Zemel & Salakhutdinov 2015).

Twin embeddings f (shared weights) and a learned weighted L1 metric:

    p(same | x1, x2) = sigmoid( w^T |f(x1) - f(x2)| + b )

trained as a binary same/different classifier on pairs of training images. An N-way K-shot query is
assigned the class whose support images it is most similar to (similarity averaged over the K shots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.core.episodes import ClassDataset, augment_images
from metalearn.core.train import RunOptions, Schedule, TrainResult, adam, train
from metalearn.metric.episodic import embed_support_query


class SiameseNet(nn.Module):
    """Twin ``backbone`` and a linear layer on the absolute difference of the two embeddings."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(cast(int, backbone.feature_dim), 1)

    def pair_logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Same/different logits for embedding pairs ``[..., D], [..., D] -> [...]``."""
        return self.head((a - b).abs()).squeeze(-1)

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                ways: int) -> torch.Tensor:
        """Mean similarity of each query to each class's support images: ``[tasks, n_query, ways]`` in [0, 1]."""
        support, query = embed_support_query(self.backbone, support_x, query_x)
        sim = torch.sigmoid(self.pair_logits(query[:, :, None], support[:, None]))  # [tasks, n_query, n_support]
        onehot = F.one_hot(support_y, ways).to(sim.dtype)
        return sim @ onehot / onehot.sum(1)[:, None]


def sample_pairs(dataset: ClassDataset, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``batch`` image pairs, half from one class (two different examples), half from two different classes:
    ``(x1 [B, C, H, W], x2 [B, C, H, W], same [B] float)``."""
    if batch < 2 or batch % 2:
        raise ValueError(f"batch must be an even number >= 2, got {batch}")
    dev, n_cls, n_ex = dataset.device, dataset.num_classes, dataset.per_class
    half = batch // 2

    def randint(high: int, size: int) -> torch.Tensor:
        return torch.randint(high, (size,), generator=generator, device=dev)

    c1 = randint(n_cls, batch)
    c2 = torch.cat([c1[:half], (c1[half:] + 1 + randint(n_cls - 1, half)) % n_cls])  # a different class
    e1 = randint(n_ex, batch)
    e2 = torch.cat([(e1[:half] + 1 + randint(n_ex - 1, half)) % n_ex, randint(n_ex, half)])  # a different example
    x1 = dataset.images[c1, e1].float().div_(255)
    x2 = dataset.images[c2, e2].float().div_(255)
    same = torch.cat([torch.ones(half, device=dev), torch.zeros(half, device=dev)])
    return x1, x2, same


@dataclass(frozen=True)
class Pairs(Schedule):
    """Verification training: ``batch`` same/different pairs per step (Adam, :class:`~metalearn.core.train.Schedule`);
    ``augment``: random flips and crops of every image."""

    batch: int = 128
    augment: bool = False


def train_siamese(model: SiameseNet, dataset: ClassDataset, steps: int, settings: Pairs,
                  run: RunOptions) -> TrainResult:
    """Binary cross-entropy on ``steps`` batches of ``settings.batch`` same/different pairs; ``run.validate``: see
    :func:`metalearn.core.train.train`."""
    batch = settings.batch
    if batch < 2 or batch % 2:
        raise ValueError(f"batch must be an even number >= 2, got {batch}")
    opt, scheduler = adam(model, steps, settings)

    def batch_fn(step: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        x1, x2, same = sample_pairs(dataset, batch, g)
        return (augment_images(x1, g), augment_images(x2, g), same) if settings.augment else (x1, x2, same)

    def loss_fn(m: SiameseNet, pairs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        x1, x2, same = pairs
        z = m.backbone(torch.cat([x1, x2]))
        logits = m.pair_logits(z[: len(x1)], z[len(x1) :])
        acc = ((logits > 0).float() == same).float().mean().item() * 100
        return F.binary_cross_entropy_with_logits(logits, same), {"pair_accuracy": acc}

    return train(model, loss_fn, batch_fn, steps, opt, run, scheduler, examples=2 * batch)  # two images a pair
