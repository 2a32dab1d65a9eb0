"""BatchNorm on the statistics of a batch, without touching the running ones: the transductive protocol.

At test time a network with BatchNorm can normalise with the running statistics it gathered in training
(non-transductive: a query's prediction never depends on the other queries) or with the statistics of the batch it
is given, as in training (transductive: Finn et al.'s and Sung et al.'s evaluation code). :func:`batch_statistics`
gives the second for many tasks at once: each task's slice of the batch is normalised with its own statistics,

    y = γ (x − μ_task) / sqrt(σ²_task + ε) + β,

differentiably, and the running statistics are never read or moved. The gradient-based methods adapt and predict
under it; the pre-trained baseline (chapter 00) is scored under it too, so that the two compare under one protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextmanager
def batch_statistics(model: nn.Module, groups: int = 1) -> Iterator[nn.Module]:
    """Inside, every BatchNorm layer of ``model`` normalises each of ``groups`` equal consecutive slices of its batch
    with that slice's own mean and (biased) variance, as BatchNorm does in training, and differentiably, but never
    reads or moves the running statistics: the model runs in eval mode and a hook (run before any other forward hook)
    replaces each BatchNorm output."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")

    def normalise(m: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d, inputs: tuple[Tensor, ...],
                  _output: Tensor) -> Tensor:
        x = inputs[0]
        if x.shape[0] % groups:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {groups} equal groups")
        g = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])  # [groups, size, C, ...]
        var, mean = torch.var_mean(g, dim=[1, *range(3, g.ndim)], correction=0, keepdim=True)
        y = (g - mean) * torch.rsqrt(var + m.eps)
        if m.affine:
            shape = (1, 1, -1) + (1,) * (g.ndim - 3)
            y = y * m.weight.view(shape) + m.bias.view(shape)
        return y.reshape(x.shape)

    was_training = model.training
    hooks = [m.register_forward_hook(normalise, prepend=True) for m in model.modules() if isinstance(m, NORMS)]
    model.eval()
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
