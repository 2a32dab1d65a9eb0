"""The gradient-based papers' networks, defined once: Finn et al.'s (2017) classifiers, which Nichol et al. (2018) and
Raghu et al. (2020) reuse, and which every gradient-based chapter, benchmark and the distributed trainer build with
:func:`finn_network`.

On Omniglot, Conv-4 with strided convolutions:

4 blocks of [conv 3x3, 64 filters, stride 2 -> BatchNorm -> ReLU], then the mean over the remaining positions:

    28x28x1 -> 14x14x64 -> 7x7x64 -> 4x4x64 -> 2x2x64 -> mean -> 64

The metric chapters' Conv-4 (:mod:`metalearn.core.models`) keeps stride 1 and max-pools instead; at 28x28 its convolutions
run on 4x the positions of these, so this network costs about a quarter of the multiply-adds per image. Padding 1
gives the same output sizes as TensorFlow's "SAME" padding of the reference code (which pads only right and bottom
where the total is odd).

On miniImageNet (here CIFAR-FS) the max-pool Conv-4 of :mod:`metalearn.core.models` with 32 filters per layer
(Finn et al. use fewer filters there to limit overfitting).
"""

from __future__ import annotations

import torch
from torch import nn

from metalearn.core.models import Classifier, conv4_for

PAPER_FILTERS = {"omniglot": 64, "cifar_fs": 32}  # filters per convolution of Finn et al.'s networks


def strided_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv 3x3 (stride 2, padding 1) -> BatchNorm -> ReLU: ``[B, in, H, W] -> [B, out, ceil(H/2), ceil(W/2)]``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class StridedConv4(nn.Module):
    """Finn et al.'s Omniglot embedding: ``[B, C, H, W] -> [B, hidden]``."""

    def __init__(self, in_channels: int = 1, hidden: int = 64) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(strided_block(in_channels if i == 0 else hidden, hidden) for i in range(4)),
                                    nn.AdaptiveAvgPool2d(1))
        self.feature_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


def finn_network(dataset: str, image_shape: tuple[int, int, int], ways: int, hidden: int | None = None) -> Classifier:
    """Finn et al.'s classifier for ``dataset`` ("omniglot": :class:`StridedConv4`; "cifar_fs": the max-pool Conv-4)
    with a linear head over ``ways`` classes, for images ``(C, H, W)``; ``hidden`` filters per convolution (None: the
    paper's, :data:`PAPER_FILTERS`; fewer only for fast tests)."""
    if dataset not in PAPER_FILTERS:
        raise ValueError(f"no gradient-based network for data set {dataset!r}; known: {', '.join(PAPER_FILTERS)}")
    filters = PAPER_FILTERS[dataset] if hidden is None else hidden
    if filters < 1 or ways < 1:
        raise ValueError(f"need hidden >= 1 and ways >= 1, got {filters} and {ways}")
    body = StridedConv4(image_shape[0], filters) if dataset == "omniglot" else conv4_for(image_shape, hidden=filters)
    return Classifier(body, ways)
