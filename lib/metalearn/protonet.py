"""Prototypical Networks' classification rule (Snell et al. 2017).

    c_k = (1/|S_k|) sum_{(x_i, y_i) in S_k} f(x_i)                      (class prototype)
    p(y = k | x) = softmax_k( -||f(x) - c_k||^2 )                        (nearest prototype)

With squared Euclidean distance this is a linear classifier: -||f - c_k||^2 = 2 c_k^T f - ||c_k||^2 - ||f||^2,
and ||f||^2 is the same for every k, so w_k = 2 c_k, b_k = -||c_k||^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """c_k = mean of the support features of class k: ``[tasks, n, D], [tasks, n] -> [tasks, ways, D]``."""
    onehot = F.one_hot(labels, ways).to(features.dtype)  # [tasks, n, ways]
    return onehot.transpose(1, 2) @ features / onehot.sum(1)[..., None]


def squared_distances(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """||q - c_k||^2 for ``query [tasks, n_query, D]`` and ``prototypes [tasks, ways, D]`` -> ``[tasks, n_query, ways]``."""
    return (query[:, :, None, :] - prototypes[:, None, :, :]).pow(2).sum(-1)


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Logits -||f(x) - c_k||^2 of each query for each class: ``[tasks, n_query, ways]``."""
    return -squared_distances(query, class_prototypes(support, support_y, ways))


class ProtoNet(nn.Module):
    """Prototypical Network over ``backbone`` (any module with ``feature_dim``): episode -> logits."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                ways: int) -> torch.Tensor:
        """-||f(x) - c_k||^2 for ``support_x [T, W*K, C, H, W]`` and ``query_x [T, W*Q, C, H, W]``: ``[T, W*Q, W]``."""
        t, n = support_x.shape[:2]
        z = self.backbone(torch.cat([support_x, query_x], 1).flatten(0, 1)).view(t, -1, self.backbone.feature_dim)
        return prototype_logits(z[:, :n], support_y, z[:, n:], ways)
