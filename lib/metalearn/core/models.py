"""Backbones shared by every method: Conv-4, an MLP, and a backbone with a linear head (Classifier).

Conv-4 (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017) is 4 blocks of
[conv 3x3, 64 filters -> BatchNorm -> ReLU -> max-pool 2x2]. On 28x28x1 Omniglot it ends at 1x1x64
(a 64-d embedding); on 32x32x3 CIFAR-FS at 2x2x64 (256-d).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv 3x3 (padding 1) -> BatchNorm -> ReLU -> max-pool 2x2: ``[B, in, H, W] -> [B, out, H/2, W/2]``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Conv-4 embedding: ``[B, C, H, W] -> [B, feature_dim]``."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, image_size: int = 28) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(conv_block(in_channels if i == 0 else hidden, hidden) for i in range(4)))
        side = image_size
        for _ in range(4):
            side //= 2
        self.feature_dim = hidden * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


def conv4_for(image_shape: tuple[int, int, int], hidden: int = 64) -> Conv4:
    """Conv-4 for images of shape ``(C, H, W)`` (H = W)."""
    c, h, w = image_shape
    if h != w:
        raise ValueError(f"Conv-4 expects square images, got {h}x{w}")
    return Conv4(in_channels=c, hidden=hidden, image_size=h)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``sizes = [in, h1, ..., out]``: Linear layers with ``activation`` between them (none after the last)."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """A backbone and a linear head over ``num_classes``."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(cast(int, backbone.feature_dim), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
