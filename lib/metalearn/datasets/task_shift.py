"""Task shift: present one data set's classes in the other's image format.

Metric-based models compare embeddings, so they are only as good as the embedding is for the new tasks.
To measure how much a model depends on its training distribution we evaluate it on tasks from the other
data set, converted to the image format it was trained on:

* natural images -> Omniglot format: luminance (ITU-R 601), area-resized to 28x28, inverted so that dark
  strokes become bright "ink" on a dark background, like Omniglot's;
* Omniglot -> CIFAR format: resized to 32x32 (bilinear) and repeated over the 3 colour channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metalearn.core.episodes import ClassDataset


def _resize(images: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    c, k = images.shape[:2]
    x = images.flatten(0, 1).float()
    kwargs = {"antialias": True} if mode == "bilinear" else {}
    x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return x.view(c, k, *x.shape[1:])


def as_omniglot_format(dataset: ClassDataset) -> ClassDataset:
    """RGB ``[classes, n, 3, H, W]`` -> grey, inverted ``[classes, n, 1, 28, 28]`` (uint8)."""
    if dataset.images.shape[2] != 3:
        raise ValueError(f"expected RGB images [classes, n, 3, H, W], got {tuple(dataset.images.shape)}")
    weights = torch.tensor([0.299, 0.587, 0.114], device=dataset.device).view(1, 1, 3, 1, 1)
    grey = (dataset.images.float() * weights).sum(2, keepdim=True)
    small = _resize(grey, 28, "area")
    return ClassDataset((255 - small).round().clamp(0, 255).to(torch.uint8), dataset.class_names,
                        f"{dataset.name} as 28x28 grey")


def as_cifar_format(dataset: ClassDataset) -> ClassDataset:
    """Grey ``[classes, n, 1, H, W]`` -> ``[classes, n, 3, 32, 32]`` (uint8)."""
    if dataset.images.shape[2] != 1:
        raise ValueError(f"expected grey images [classes, n, 1, H, W], got {tuple(dataset.images.shape)}")
    big = _resize(dataset.images, 32, "bilinear").round().clamp(0, 255).to(torch.uint8)
    return ClassDataset(big.expand(-1, -1, 3, -1, -1).contiguous(), dataset.class_names,
                        f"{dataset.name} as 32x32 RGB")
