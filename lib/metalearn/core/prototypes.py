"""The nearest-prototype rule (Snell et al. 2017), shared by every method that classifies by class means: Prototypical
Networks, the pre-trained baseline's nearest centroid, the hypernetwork's generated classifier and the molecular
scorers.

    c_k = (1/|S_k|) sum_{(x_i, y_i) in S_k} f(x_i)                      (class prototype)
    p(y = k | x) = softmax_k( -||f(x) - c_k||^2 )                        (nearest prototype)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
