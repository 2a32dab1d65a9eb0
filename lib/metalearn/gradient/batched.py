"""Many tasks in one pass: each task's images through the network with that task's own weights, one layer at a time.

A loop over tasks runs every layer T times on a handful of images: on a GPU, T small kernels per layer leave the
device mostly idle, and on a CPU each call's overhead outweighs its arithmetic. Here the weights carry a task
dimension, θ_b [T, ...], and each layer runs once for all T tasks:

    conv        images [N, T·C, H, W], weights [T·C', C, 3, 3], ``groups=T``  (task i sees only its own filters)
    BatchNorm   over [N, T·C, H, W]: statistics per (task, channel), i.e. each task's own batch statistics
    linear      ``bmm`` over [T, N, D] with weights [T, ways, D]

MAML's task-batched meta-step (:mod:`metalearn.gradient.task_batched`) and the batched test-time adaptation of
:class:`metalearn.gradient.evaluation.Adapted` both run on it. Supported layers: Conv2d, BatchNorm2d, ReLU, MaxPool2d,
AdaptiveAvgPool2d(1), Linear (and the flatten before the first Linear), i.e. the Conv-4 classifiers (max-pool or
strided) and MLPs; convolutions ungrouped with zero padding, BatchNorm with γ and β.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]

_SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear)


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's leaf layers in order, checked to be supported (``ValueError`` naming the first that is not)."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    for name, m in leaves:
        unsupported = (not isinstance(m, _SUPPORTED)
                       or (isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size not in (1, (1, 1)))
                       or (isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"))
                       or (isinstance(m, nn.BatchNorm2d) and not m.affine))
        if unsupported:
            raise ValueError(f"the task-batched forward does not support {m} ({name}); run this model one task "
                             "at a time (e.g. metalearn.gradient.outer_loop.meta_loss)")
    return leaves


def batched_forward(model: nn.Module, params: Params, x: Tensor, update_stats: bool = True) -> Tensor:
    """The model's layers applied to each task's images with that task's weights:
    ``params`` ``{name: [T, *shape]}``, ``x [T, N, ...]`` -> outputs ``[T, N, ...]``. In training mode BatchNorm
    uses each task's batch statistics and (``update_stats``) moves the running statistics by the tasks' average."""
    t, n = x.shape[:2]
    h = x.transpose(0, 1).reshape(n, t * x.shape[2], *x.shape[3:]) if x.ndim == 5 else x  # [N, T*C, H, W]
    for name, m in layers(model):
        p = {k: params[f"{name}.{k}" if name else k] for k, _ in m.named_parameters()}
        if isinstance(m, nn.Conv2d):
            h = F.conv2d(h, p["weight"].flatten(0, 1), p["bias"].flatten() if "bias" in p else None,
                         m.stride, m.padding, m.dilation, groups=t)
        elif isinstance(m, nn.BatchNorm2d):
            use_batch = m.training or m.running_mean is None
            mean = var = None
            if m.running_mean is not None and (not use_batch or update_stats):
                assert m.running_var is not None  # registered with running_mean (track_running_stats)
                mean, var = m.running_mean.repeat(t), m.running_var.repeat(t)
            h = F.batch_norm(h, mean, var, p["weight"].flatten(), p["bias"].flatten(), use_batch,
                             cast(float, m.momentum), m.eps)  # momentum=None is not supported (TypeError)
            if use_batch and update_stats and mean is not None:
                assert var is not None and m.running_mean is not None and m.running_var is not None
                assert m.num_batches_tracked is not None
                with torch.no_grad():
                    m.running_mean.copy_(mean.view(t, -1).mean(0))
                    m.running_var.copy_(var.view(t, -1).mean(0))
                    m.num_batches_tracked += 1
        elif isinstance(m, nn.ReLU):
            h = F.relu(h)
        elif isinstance(m, nn.MaxPool2d):
            h = F.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        elif isinstance(m, nn.AdaptiveAvgPool2d):  # to 1x1: the mean over positions
            h = h.mean((2, 3), keepdim=True)
        else:  # Linear: from [N, T*C, H, W] (or [T, N, D]) to [T, N, D], then one batched matmul
            if h.ndim == 4:
                h = h.reshape(n, t, -1).transpose(0, 1)
            out = torch.bmm(h, p["weight"].transpose(1, 2))
            h = out + p["bias"][:, None] if "bias" in p else out
    return h


def supports(model: nn.Module) -> bool:
    """Whether :func:`batched_forward` runs ``model`` (every leaf layer supported)."""
    try:
        layers(model)
    except ValueError:
        return False
    return True
