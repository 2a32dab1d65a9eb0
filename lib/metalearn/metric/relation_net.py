"""Relation Network (Sung et al. 2018): learn the metric itself.

    r_{i,k} = g_phi( C( f(x_i), sum_{x_j in S_k} f(x_j) ) ) in [0, 1]

f keeps spatial feature maps (4 conv blocks; only the first two pool), C concatenates the query's and the
class's maps along channels, and the relation module g (2 conv blocks, FC 8, FC 1, sigmoid) scores each
pair. Trained by regressing the scores onto the one-hot match (mean squared error), as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.metric.episodic import embed_support_query


def _block(cin: int, cout: int, padding: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class RelationNet(nn.Module):
    """Embedding ``[B, C, H, W] -> [B, 64, s, s]`` and relation module ``[B, 128, s, s] -> [B]`` in [0, 1]."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 64, relation_dim: int = 8) -> None:
        super().__init__()
        self.embedding = nn.Sequential(_block(in_channels, hidden, 0, True), _block(hidden, hidden, 0, True),
                                       _block(hidden, hidden, 1, False), _block(hidden, hidden, 1, False))
        side = ((image_size - 2) // 2 - 2) // 2  # 28 -> 5, 32 -> 6
        out = side // 2 // 2
        self.relation = nn.Sequential(_block(2 * hidden, hidden, 1, True), _block(hidden, hidden, 1, True),
                                      nn.Flatten(), nn.Linear(hidden * max(out, 1) ** 2, relation_dim),
                                      nn.ReLU(inplace=True), nn.Linear(relation_dim, 1), nn.Sigmoid())

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                ways: int) -> torch.Tensor:
        """Relation scores of every (query, class) pair: ``[tasks, n_query, ways]`` in [0, 1]."""
        support, query = embed_support_query(self.embedding, support_x, query_x)  # [tasks, n or m, 64, s, s]
        onehot = F.one_hot(support_y, ways).to(support.dtype)  # [tasks, n, ways]
        classes = torch.einsum("tnk,tncij->tkcij", onehot, support)  # sum over each class's shots
        t, m = query.shape[:2]
        pairs = torch.cat([query[:, :, None].expand(-1, -1, ways, -1, -1, -1),
                           classes[:, None].expand(-1, m, -1, -1, -1, -1)], dim=3)
        return self.relation(pairs.flatten(0, 2)).view(t, m, ways)

    def loss(self, scores: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
        """Mean squared error against the one-hot match (Sung et al. 2018)."""
        return F.mse_loss(scores, F.one_hot(query_y, scores.shape[-1]).to(scores.dtype))
