"""Few-shot learning with graph neural networks (Garcia & Bruna 2018).

Each query forms a graph with the support set. Node features are the embedding and the label:

    x_i^0 = [ f(x_i) || onehot(y_i) ]   (support),      x^0 = [ f(x_hat) || 1/ways ]   (the query: uniform label)

and every layer learns its own adjacency from the current node features and mixes neighbours (a GCN layer):

    A_ij^k = softmax_j( MLP(|x_i^k - x_j^k|) ),      x^{k+1} = [ x^k || rho( W [x^k, A^k x^k] ) ]

(dense connections: new features are appended). A last layer of the same form outputs the query's class logits.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.metric.episodic import embed_support_query


class Adjacency(nn.Module):
    """A_ij = softmax_j(MLP(|x_i - x_j|)) over the other nodes: ``[B, n, d] -> [B, rows, n]`` (rows sum to 1);
    ``rows`` (default: all n) limits the computation to the first rows, the nodes whose output is needed."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * hidden), nn.LeakyReLU(), nn.Linear(2 * hidden, hidden),
                                 nn.LeakyReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        rows = x.shape[1] if rows is None else rows
        scores = self.mlp((x[:, :rows, None] - x[:, None]).abs()).squeeze(-1)
        eye = torch.eye(rows, x.shape[1], dtype=torch.bool, device=x.device)
        return torch.softmax(scores.masked_fill(eye, float("-inf")), dim=-1)


class GraphConv(nn.Module):
    """rho(W [x, A x]) with a learned adjacency: ``[B, n, d] -> [B, n, out]``."""

    def __init__(self, dim: int, out: int, hidden: int, activate: bool = True) -> None:
        super().__init__()
        self.adjacency = Adjacency(dim, hidden)
        self.linear = nn.Linear(2 * dim, out)
        self.norm = nn.BatchNorm1d(out) if activate else None

    def forward(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """New features of the first ``rows`` nodes (default: all): ``[B, rows, out]``."""
        rows = x.shape[1] if rows is None else rows
        h = self.linear(torch.cat([x[:, :rows], self.adjacency(x, rows) @ x], -1))
        if self.norm is None:
            return h
        return F.leaky_relu(self.norm(h.transpose(1, 2)).transpose(1, 2))


class FCEmbedding(nn.Module):
    """The official code's embedding head: ``backbone`` -> Linear (no bias) -> BatchNorm1d,
    ``[B, C, H, W] -> [B, dim]`` (Garcia & Bruna's Omniglot encoder ends in FC to 64, their miniImageNet one in
    FC to 128 + BatchNorm)."""

    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone, self.feature_dim = backbone, dim
        self.fc = nn.Linear(cast(int, backbone.feature_dim), dim, bias=False)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(self.backbone(x)))


class MetaGNN(nn.Module):
    """Embedding (e.g. Conv-4, or :class:`FCEmbedding` over it) -> ``layers`` dense GCN layers -> query logits; one
    graph per query."""

    def __init__(self, backbone: nn.Module, ways: int, hidden: int = 96, layers: int = 2) -> None:
        super().__init__()
        self.backbone, self.ways = backbone, ways
        dim = cast(int, backbone.feature_dim) + ways
        self.layers = nn.ModuleList()
        for _ in range(layers):
            self.layers.append(GraphConv(dim, hidden // 2, hidden))
            dim += hidden // 2
        self.out = GraphConv(dim, ways, hidden, activate=False)

    def graphs(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
               ways: int) -> torch.Tensor:
        """Initial node features of one graph per query, the query as node 0 and the support set as nodes
        1..n: ``[tasks * n_query, 1 + n, D + ways]``."""
        if ways != self.ways:
            raise ValueError(f"this MetaGNN was built for {self.ways}-way tasks, got {ways}-way")
        z_s, z_q = embed_support_query(self.backbone, support_x, query_x)
        t, m = z_q.shape[:2]
        support = torch.cat([z_s, F.one_hot(support_y, ways).to(z_s.dtype)], -1)  # [t, n, d]
        query = torch.cat([z_q, torch.full((t, m, ways), 1.0 / ways, device=z_q.device)], -1)  # [t, m, d]
        return torch.cat([query[:, :, None], support[:, None].expand(-1, m, -1, -1)], 2).flatten(0, 1)

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                ways: int) -> torch.Tensor:
        """Class logits of every query, each read off its own graph: ``[tasks, n_query, ways]``."""
        x = self.graphs(support_x, support_y, query_x, ways)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], -1)
        return self.out(x, rows=1)[:, 0].view(*query_x.shape[:2], ways)  # only the query node's output is needed
