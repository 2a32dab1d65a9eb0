"""Faster meta-steps with the same gradients as the loop over tasks (:func:`metalearn.gradient.outer_loop.meta_loss`):
the task-batched step (all T tasks of a meta-batch in one forward and backward pass per layer), the same split over
threads, and the head-only step of ANIL (the body run once per task).

The task-batched step expands θ to per-task copies θ_b [T, ...], so the adapted weights θ'_b = θ_b − α ∇L_S(θ_b) are
per task, and each layer runs once for the whole meta-batch (:mod:`metalearn.gradient.batched`). Because Σ_i L_i(θ_b[i])
separates over tasks, one ``autograd.grad`` gives every task's inner gradient, and the outer backward through
``θ.expand`` sums the tasks' meta-gradients. No ``vmap`` is involved (its BatchNorm batching rule gives wrong
second-order gradients); the tests check this step against the per-task loop in float64.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn.gradient.batched import batched_forward
from metalearn.gradient.inner_loop import LossFn, Params, Tasks, adapt, check_inner_loop, head_names


def batched_meta_loss(model: nn.Module, tasks: Tasks, *, inner_steps: int, inner_lr: float, first_order: bool = False,
                      names: list[str] | None = None, loss_fn: LossFn = F.cross_entropy) -> tuple[Tensor, Tensor]:
    """The same objective and gradients as :func:`metalearn.gradient.outer_loop.meta_loss`, computed for all tasks at
    once."""
    names = check_inner_loop(model, inner_steps, inner_lr, names)
    t = tasks.support_x.shape[0]
    theta = dict(model.named_parameters())
    # adapted parameters get a task dimension; the others are shared by every task (expand: no copy)
    params = {n: p.expand(t, *p.shape) for n, p in theta.items()}

    def task_losses(out: Tensor, y: Tensor) -> Tensor:  # Σ_i L_i: the mean within each task, summed over tasks
        return loss_fn(out.flatten(0, 1), y.flatten(0, 1)) * t

    for _ in range(inner_steps):
        loss = task_losses(batched_forward(model, params, tasks.support_x), tasks.support_y)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order)
        params = {**params, **{n: params[n] - inner_lr * g for n, g in zip(names, grads, strict=True)}}
    out = batched_forward(model, params, tasks.query_x)
    return task_losses(out, tasks.query_y) / t, out


def parallel_meta_loss(model: nn.Module, tasks: Tasks, *, inner_steps: int, inner_lr: float,
                       first_order: bool = False, names: list[str] | None = None, loss_fn: LossFn = F.cross_entropy,
                       workers: int = 2) -> tuple[Tensor, Tensor]:
    """The meta-batch split over ``workers`` threads, each running its tasks with one intra-op thread.

    A CPU splits each operation of one small task over its cores badly (too little work per operation); running
    whole tasks side by side keeps every core busy. Each worker has its own copy of the module (``functional_call``
    swaps a module's tensors while it runs, so it must not be shared between threads) and of BatchNorm's running
    statistics (averaged into the model's afterwards), and returns its tasks' meta-gradient; the gradients are summed
    in a fixed order, so the result does not depend on thread timing. Returns a loss whose value is the meta-loss
    and whose gradient is the meta-gradient, and the query outputs ``[T, m, ...]``.
    """
    names = check_inner_loop(model, inner_steps, inner_lr, names)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t = len(tasks.support_x)
    theta: Params = dict(model.named_parameters())
    chunks = [c.tolist() for c in torch.arange(t).tensor_split(min(workers, t))]

    def run(indices: list[int]) -> tuple[Tensor, list[Tensor | None], Tensor, Params]:
        replica = copy.deepcopy(model)
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        losses, outputs = [], []
        for i in indices:
            adapted = adapt(replica, theta, tasks.support_x[i], tasks.support_y[i], steps=inner_steps,
                            inner_lr=inner_lr, first_order=first_order, names=names, loss_fn=loss_fn, buffers=buffers)
            out = functional_call(replica, {**adapted, **buffers}, (tasks.query_x[i],))
            losses.append(loss_fn(out, tasks.query_y[i]))
            outputs.append(out.detach())
        total = torch.stack(losses).sum() / t
        grads = torch.autograd.grad(total, list(theta.values()), allow_unused=True)
        return total.detach(), list(grads), torch.stack(outputs), buffers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(chunks)) as pool:
            results = list(pool.map(run, chunks))
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        for n, b in model.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.stack([r[3][n] for r in results]).mean(0))
            else:
                b.copy_(max(r[3][n] for r in results))
    loss = cast(Tensor, sum(r[0] for r in results))  # at least one chunk
    for j, p in enumerate(theta.values()):
        g = [gj for r in results if (gj := r[1][j]) is not None]
        if g:
            loss = loss + ((p - p.detach()) * sum(g)).sum()  # value unchanged; gradient = the meta-gradient
    return loss, torch.cat([r[2] for r in results])


def body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The network split into the body and its last linear layer: ``model.backbone`` / ``model.head`` (a
    :class:`~metalearn.core.models.Classifier`) or ``model[:-1]`` / ``model[-1]`` (an ``nn.Sequential``)."""
    if hasattr(model, "backbone") and isinstance(getattr(model, "head", None), nn.Linear):
        return cast(nn.Module, model.backbone), cast(nn.Linear, model.head)
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1], model[-1]
    raise ValueError(f"{type(model).__name__} is neither a Classifier (backbone + linear head) nor an nn.Sequential "
                     "ending in nn.Linear, so its body and head cannot be separated")


def anil_meta_loss(model: nn.Module, tasks: Tasks, *, inner_steps: int, inner_lr: float, first_order: bool = False,
                   names: list[str] | None = None, loss_fn: LossFn = F.cross_entropy) -> tuple[Tensor, Tensor]:
    """ANIL's outer objective (1/T) Σ_i L_{Q_i}(w'_i) and the query outputs ``[T, m, ...]``, with the body run once
    per task on its support and query images (``names``, if given, must be the head's parameters).

    The meta-gradients equal :func:`metalearn.gradient.outer_loop.meta_loss` with ``names=head_names(model)``;
    BatchNorm's running statistics move once per task instead of once per inner step."""
    head_params = head_names(model)
    check_inner_loop(model, inner_steps, inner_lr, names)
    if names is not None and sorted(names) != sorted(head_params):
        raise ValueError(f"ANIL's step adapts only the head {head_params}, got names={names}; "
                         "use metalearn.gradient.outer_loop.meta_loss to adapt other parameters")
    body, head = body_and_head(model)
    w: Params = dict(head.named_parameters())
    losses, outputs = [], []
    for sx, sy, qx, qy in zip(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y, strict=True):
        support, query = body(sx), body(qx)  # once per task: the body does not adapt
        adapted = adapt(head, w, support, sy, steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                        loss_fn=loss_fn)
        out = functional_call(head, adapted, (query,))
        losses.append(loss_fn(out, qy))
        outputs.append(out)
    return torch.stack(losses).mean(), torch.stack(outputs)
