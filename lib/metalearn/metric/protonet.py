"""Prototypical Networks' classification rule (Snell et al. 2017).

    c_k = (1/|S_k|) sum_{(x_i, y_i) in S_k} f(x_i)                      (class prototype)
    p(y = k | x) = softmax_k( -||f(x) - c_k||^2 )                        (nearest prototype)

With squared Euclidean distance this is a linear classifier: -||f - c_k||^2 = 2 c_k^T f - ||c_k||^2 - ||f||^2,
and ||f||^2 is the same for every k, so w_k = 2 c_k, b_k = -||c_k||^2.
"""

from __future__ import annotations

import torch
from torch import nn

from metalearn.core.prototypes import prototype_logits


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
