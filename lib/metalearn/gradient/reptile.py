"""Reptile (Nichol, Achiam & Schulman 2018): meta-learning without second derivatives.

For each task τ of a batch of n, run k steps of SGD on its data from θ:  θ̃_τ = U^k_τ(θ); then move θ towards
the adapted weights:
    θ ← θ + ε (1/n) Σ_τ (θ̃_τ − θ)
With k = 1, θ̃_τ − θ = −α ∇L_τ(θ): the Reptile direction is (−α times) the gradient of the expected loss, i.e.
joint (multi-task) training. With k > 1 it is not: its Taylor expansion adds terms that increase the inner product
of gradients of different batches of the same task, which is what makes the initialisation adapt quickly.

The outer update is run by an ordinary optimizer on a surrogate loss whose gradient is θ − θ̃ (its value is the
tasks' loss at θ): plain SGD with step size ε then performs exactly θ ← θ + ε(θ̃ − θ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn.core.train import RunOptions, TrainResult, train
from metalearn.gradient.inner_loop import (
    Adaptation,
    LossFn,
    Params,
    Tasks,
    TaskSampler,
    adapt,
    adapt_minibatches,
    check_inner_loop,
)


def reptile_direction(model: nn.Module, tasks: Tasks, *, inner_steps: int, inner_lr: float,
                      inner_batch: int | None = None, loss_fn: LossFn = F.cross_entropy) -> tuple[Params, Tensor]:
    """(1/n) Σ_τ (θ̃_τ − θ) over the batch's tasks, each adapted by ``inner_steps`` SGD steps on its examples (support
    and query together: Reptile has no query set), and the mean loss at θ. Each step uses all of them, or, with
    ``inner_batch``, the next ``inner_batch`` of a random order (Nichol et al.'s minibatches, cycling through the task's
    data; the order comes from torch's global generator, which the training loop seeds per step)."""
    theta = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    step = {n: torch.zeros_like(p) for n, p in theta.items()}
    first_losses = []
    for sx, sy, qx, qy in zip(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y, strict=True):
        x, y = torch.cat([sx, qx]), torch.cat([sy, qy])
        with torch.no_grad():
            first_losses.append(loss_fn(torch.func.functional_call(model, theta, (x,)), y))
        if inner_batch is None:
            adapted = adapt(model, theta, x, y, steps=inner_steps, inner_lr=inner_lr, first_order=True,
                            loss_fn=loss_fn)
        else:
            adapted = adapt_minibatches(model, theta, x, y, steps=inner_steps, inner_lr=inner_lr, batch=inner_batch,
                                        loss_fn=loss_fn)
        for n in step:
            step[n] += (adapted[n] - theta[n]).detach()
    return {n: s / len(first_losses) for n, s in step.items()}, torch.stack(first_losses).mean()


def joint_gradient(model: nn.Module, tasks: Tasks, loss_fn: LossFn = F.cross_entropy) -> Params:
    """∇_θ (1/n) Σ_τ L_τ(θ) on all of each task's examples (support and query): the direction of joint (multi-task)
    training, which the k = 1 Reptile direction equals up to the factor −α."""
    theta: Params = dict(model.named_parameters())
    loss = torch.stack([loss_fn(torch.func.functional_call(model, theta, (torch.cat([sx, qx]),)), torch.cat([sy, qy]))
                        for sx, sy, qx, qy in zip(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y,
                                                  strict=True)]).mean()
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))


@dataclass(frozen=True, kw_only=True)
class ReptileTraining:
    """What Reptile learns with: batches of ``tasks`` tasks, ``inner_steps`` SGD steps of step size ``inner_lr`` on
    each (on minibatches of ``inner_batch`` examples; None: the whole task), the outer step size ε = ``lr``,
    annealed linearly to 0 when ``anneal`` (as in Nichol et al.), else halved every ``halve_lr_every`` steps (0:
    constant); ``outer="adam"`` feeds θ − θ̃ to Adam as a gradient instead (Nichol et al. §3); MSE instead of
    cross-entropy with ``regression``; ``test``: its test-time rule (Nichol et al.'s: every parameter, minibatches of
    the support set, BatchNorm statistics of the support set plus each query), which validation checks score; None
    for a model scored otherwise (sinusoids: :func:`metalearn.gradient.regression.adapted_mse`)."""

    tasks: int
    inner_steps: int
    inner_lr: float
    lr: float
    inner_batch: int | None = None
    anneal: bool = True
    halve_lr_every: int = 0
    outer: str = "sgd"
    regression: bool = False
    test: Adaptation | None = None


def train_reptile(model: nn.Module, sampler: TaskSampler, steps: int, settings: ReptileTraining,
                  run: RunOptions) -> TrainResult:
    """``steps`` Reptile updates θ ← θ + ε (1/n) Σ (θ̃ − θ) (see :class:`ReptileTraining` and
    :func:`reptile_direction`); ``run.validate``: model selection on validation tasks, see
    :func:`metalearn.core.train.train`."""
    s = settings
    check_inner_loop(model, s.inner_steps, s.inner_lr, None)
    if s.inner_steps < 1:
        raise ValueError("Reptile needs inner_steps >= 1 (with 0 it does not move)")
    if s.inner_batch is not None and s.inner_batch < 1:
        raise ValueError(f"inner_batch must be >= 1 (or None for full batches), got {s.inner_batch}")
    if s.outer not in ("sgd", "adam"):
        raise ValueError(f"outer must be 'sgd' or 'adam', got {s.outer!r}")
    loss_fn = F.mse_loss if s.regression else F.cross_entropy
    opt = (torch.optim.SGD if s.outer == "sgd" else torch.optim.Adam)(model.parameters(), lr=s.lr)
    sched: torch.optim.lr_scheduler.LRScheduler | None
    if s.anneal:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / max(steps, 1))
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, s.halve_lr_every, 0.5) if s.halve_lr_every > 0 else None

    def step_loss(m: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        direction, task_loss = reptile_direction(m, batch, inner_steps=s.inner_steps, inner_lr=s.inner_lr,
                                                 inner_batch=s.inner_batch, loss_fn=loss_fn)
        # value: the tasks' loss at θ (what the curve shows); gradient: θ − θ̃
        surrogate = task_loss + sum(((p - p.detach()) * -direction[n]).sum() for n, p in m.named_parameters())
        return surrogate, {}

    return train(model, step_loss, lambda step, g: sampler.sample(s.tasks, g), steps, opt, run, sched,
                 examples=s.tasks * sampler.examples_per_task)
