"""The outer loop that MAML, first-order MAML and ANIL share (their entry points: :mod:`~metalearn.gradient.maml`,
:mod:`~metalearn.gradient.fomaml`, :mod:`~metalearn.gradient.anil`), with a choice of how a meta-batch is computed.

Outer loop, a batch of T tasks (Adam with step size β):
    θ ← θ − β ∇_θ (1/T) Σ_i L_{Q_i}(f_{θ'_i})
Every meta-step below gives the same gradients; they differ in speed only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn.core.train import RunOptions, Schedule, TrainResult, adam, train
from metalearn.gradient.inner_loop import (
    Adaptation,
    LossFn,
    Tasks,
    TaskSampler,
    adapt,
    check_inner_loop,
    head_names,
    inner_names,
    parameters,
    query_metrics,
)
from metalearn.gradient.task_batched import anil_meta_loss, batched_meta_loss, parallel_meta_loss

META_STEPS = ("loop", "batched", "parallel", "head")


@dataclass(frozen=True, kw_only=True)
class MetaTraining(Schedule):
    """What MAML, FOMAML and ANIL learn with (their entry points take it; Adam's ``lr`` is β): meta-batches of
    ``tasks`` tasks (T), ``inner_steps`` SGD steps (k) of step size ``inner_lr`` (α) on each task's support set,
    adapting ``inner`` (:data:`~metalearn.gradient.inner_loop.INNER`: every parameter, every one but BatchNorm's as
    in Finn et al., or the head as in ANIL); MSE instead of cross-entropy with ``regression``; ``meta_step``: how a
    meta-batch is computed (:data:`META_STEPS`, the same gradients); ``test``: the method's test-time rule, which
    validation checks score (None for a model scored otherwise, e.g. sinusoids by
    :func:`metalearn.gradient.regression.adapted_mse`). The inner loop's fields have no default: a chapter sets
    each of them."""

    tasks: int
    inner_steps: int
    inner_lr: float
    inner: str
    regression: bool = False
    meta_step: str = "loop"
    test: Adaptation | None = None


def meta_loss(model: nn.Module, tasks: Tasks, *, inner_steps: int, inner_lr: float, first_order: bool = False,
              names: list[str] | None = None, loss_fn: LossFn = F.cross_entropy) -> tuple[Tensor, Tensor]:
    """MAML's outer objective (1/T) Σ_i L_{Q_i}(f_{θ'_i}) over a batch of T tasks, with the query outputs
    ``[T, m, ...]``. One task at a time: ``vmap`` over tasks gives wrong second-order gradients with BatchNorm."""
    params = parameters(model)
    losses, outputs = [], []
    for sx, sy, qx, qy in zip(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y, strict=True):
        adapted = adapt(model, params, sx, sy, steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                        names=names, loss_fn=loss_fn)
        out = functional_call(model, adapted, (qx,))
        losses.append(loss_fn(out, qy))
        outputs.append(out)
    return torch.stack(losses).mean(), torch.stack(outputs)


def meta_train(model: nn.Module, sampler: TaskSampler, steps: int, settings: MetaTraining, run: RunOptions, *,
               first_order: bool = False) -> TrainResult:
    """Meta-train ``model`` for ``steps`` outer steps (Adam, :class:`~metalearn.core.train.Schedule`) on batches of
    ``settings.tasks`` tasks; ``run.validate``: model selection on validation tasks, see
    :func:`metalearn.core.train.train`.

    ``first_order`` gives FOMAML, ``settings.inner="head"`` ANIL, ``inner_steps=0`` plain joint training on the
    query sets (the pre-trained baseline). ``settings.meta_step`` picks how the meta-batch is computed, all with the
    same gradients: "loop" (:func:`meta_loss`), "batched" or "parallel" (:mod:`metalearn.gradient.task_batched`),
    or, when only the head adapts, "head" (:func:`~metalearn.gradient.task_batched.anil_meta_loss`: the body runs
    once per task).
    """
    s = settings
    names = check_inner_loop(model, s.inner_steps, s.inner_lr, inner_names(model, s.inner))
    if s.tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {s.tasks}")
    if s.meta_step not in META_STEPS:
        raise ValueError(f"meta_step must be one of {META_STEPS}, got {s.meta_step!r}")
    if s.meta_step == "head" and sorted(names) != sorted(head_names(model)):
        raise ValueError(f"meta_step='head' adapts only the head: set inner='head', got inner={s.inner!r}")
    meta_loss_fn = {"loop": meta_loss, "batched": batched_meta_loss, "parallel": parallel_meta_loss,
                    "head": anil_meta_loss}[s.meta_step]
    loss_fn = F.mse_loss if s.regression else F.cross_entropy
    opt, scheduler = adam(model, steps, s)

    def step_loss(m: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        loss, out = meta_loss_fn(m, batch, inner_steps=s.inner_steps, inner_lr=s.inner_lr, first_order=first_order,
                                 names=names, loss_fn=loss_fn)
        return loss, query_metrics(out, batch.query_y)

    return train(model, step_loss, lambda step, g: sampler.sample(s.tasks, g), steps, opt, run, scheduler,
                 examples=s.tasks * sampler.examples_per_task)
