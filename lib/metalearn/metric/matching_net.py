"""Matching Networks (Vinyals et al. 2016).

    P(y_hat | x_hat, S) = sum_i a(x_hat, x_i) y_i,      a(x_hat, x_i) = softmax_i( cos(f(x_hat), g(x_i)) )

Simple embedding: f = g = Conv-4. Full Context Embeddings (FCE) make both depend on the whole support set:

* g: a bidirectional LSTM over the support embeddings g'(x_i), g(x_i) = h_fwd_i + h_bwd_i + g'(x_i);
* f: an attention LSTM with K read steps over g(S), starting from f'(x_hat):
      h_hat_k, c_k = LSTM(f'(x_hat), [h_{k-1}, r_{k-1}], c_{k-1}),   h_k = h_hat_k + f'(x_hat),
      r_{k-1} = sum_i a(h_{k-1}, g(x_i)) g(x_i),   a(h, g(x_i)) = softmax_i(h^T g(x_i)),   f(x_hat) = h_K.
  The read-out r enters the LSTM beside its input (the cell sees [f'(x_hat), r_{k-1}]), the usual way of
  feeding the concatenated state [h, r] to a standard LSTM cell.

Cosine similarities lie in [-1, 1], so a softmax over them is nearly uniform: with 5 support examples the most
a single one can take is e/(e + 4/e) = 0.65, and the log-likelihood saturates before the classes separate. We
multiply the cosine by a learned scale s (initialised to 10, as in the metric scaling of Oreshkin et al. 2018),
a = softmax_i(s * cos(f(x_hat), g(x_i))); s = 1 fixed recovers the paper's equation (``cosine_scale=None``).

With ``distance="euclidean"`` the attention is softmax(-||f - g||^2); in one-shot this is exactly a
Prototypical Network (each prototype is the one support embedding), in K-shot it is not (soft nearest
neighbour over examples vs nearest class mean).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.core.prototypes import squared_distances
from metalearn.metric.episodic import embed_support_query


class FullContextEmbedding(nn.Module):
    """g (bidirectional LSTM over the support set) and f (attention LSTM with ``read_steps`` reads)."""

    def __init__(self, dim: int, read_steps: int) -> None:
        super().__init__()
        if read_steps <= 0:
            raise ValueError(f"read_steps must be positive, got {read_steps}")
        self.dim, self.read_steps = dim, read_steps
        self.g_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.f_cell = nn.LSTMCell(2 * dim, dim)

    def embed_support(self, support: torch.Tensor) -> torch.Tensor:
        """g(x_i) = h_fwd + h_bwd + g'(x_i): ``[tasks, n, D] -> [tasks, n, D]``."""
        out, _ = self.g_lstm(support)
        return out[..., : self.dim] + out[..., self.dim :] + support

    def read_attention(self, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """a(h, g(x_i)) = softmax_i(h^T g(x_i)): ``[tasks, m, D], [tasks, n, D] -> [tasks, m, n]``."""
        return torch.softmax(h @ g.transpose(1, 2), dim=-1)

    def embed_query(self, query: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f(x_hat) = h_K after ``read_steps`` attention reads over g(S): ``[tasks, m, D]``."""
        t, m, d = query.shape
        f0 = query.reshape(t * m, d)
        h, c = torch.zeros_like(f0), torch.zeros_like(f0)
        for _ in range(self.read_steps):
            r = (self.read_attention(h.view(t, m, d), g) @ g).reshape(t * m, d)
            h_hat, c = self.f_cell(torch.cat([f0, r], -1), (h, c))
            h = h_hat + f0
        return h.view(t, m, d)


class MatchingNet(nn.Module):
    """Matching Network over ``backbone`` (any module with ``feature_dim``); ``fce`` adds Full Context Embeddings.

    ``cosine_scale``: initial value of the learned scale s of the cosine similarities (``None``: s = 1, fixed);
    ignored for ``distance="euclidean"``."""

    def __init__(self, backbone: nn.Module, fce: bool = False, read_steps: int = 5,
                 distance: str = "cosine", cosine_scale: float | None = 10.0) -> None:
        super().__init__()
        if distance not in ("cosine", "euclidean"):
            raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
        if cosine_scale is not None and cosine_scale <= 0:
            raise ValueError(f"cosine_scale must be positive or None, got {cosine_scale}")
        self.backbone, self.distance = backbone, distance
        self.fce = FullContextEmbedding(cast(int, backbone.feature_dim), read_steps) if fce else None
        learn_scale = distance == "cosine" and cosine_scale is not None
        self.log_scale = nn.Parameter(torch.tensor(math.log(cast(float, cosine_scale)))) if learn_scale else None

    def attention(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """a(x_hat, x_i): ``[tasks, n_query, n_support]``, each row sums to 1."""
        if self.distance == "cosine":
            sim = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
            if self.log_scale is not None:
                sim = sim * self.log_scale.exp()
        else:
            sim = -squared_distances(query, support)
        return torch.softmax(sim, dim=-1)

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                ways: int) -> torch.Tensor:
        """log P(y = k | x_hat, S): ``[tasks, n_query, ways]``."""
        support, query = self.embed(support_x, query_x)
        probs = self.attention(support, query) @ F.one_hot(support_y, ways).to(support.dtype)
        return probs.clamp_min(1e-8).log()

    def embed(self, support_x: torch.Tensor, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g(x_i) of the support set and f(x_hat) of the queries: ``[tasks, n, D]``, ``[tasks, m, D]``."""
        support, query = embed_support_query(self.backbone, support_x, query_x)
        if self.fce is not None:
            support = self.fce.embed_support(support)
            query = self.fce.embed_query(query, support)
        return support, query
