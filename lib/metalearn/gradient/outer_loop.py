"""The outer loop that MAML, first-order MAML and ANIL share (their entry points: :mod:`~metalearn.gradient.maml`,
:mod:`~metalearn.gradient.fomaml`, :mod:`~metalearn.gradient.anil`), with a choice of how a meta-batch is computed.

Outer loop, a batch of T tasks (Adam with step size β):
    θ ← θ − β ∇_θ (1/T) Σ_i L_{Q_i}(f_{θ'_i})
Every meta-step below gives the same gradients; they differ in speed only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn.core.inner_loop import (
    LossFn,
    Tasks,
    TaskSampler,
    adapt,
    check_inner_loop,
    head_names,
    parameters,
    query_metrics,
)
from metalearn.core.train import TrainResult, ValidateFn, lr_scheduler, train
from metalearn.gradient.task_batched import anil_meta_loss, batched_meta_loss, parallel_meta_loss

META_STEPS = ("loop", "batched", "parallel", "head")


class MetaOptions(TypedDict, total=False):
    """The settings of :func:`meta_train` besides the choice that names a method (``first_order``): what the
    entry points :func:`~metalearn.gradient.maml.train_maml`, :func:`~metalearn.gradient.fomaml.train_fomaml` and
    :func:`~metalearn.gradient.anil.train_anil` take."""

    tasks: int  # T, tasks per meta-batch
    inner_steps: int  # k, SGD steps on a task's support set
    inner_lr: float  # α
    names: list[str] | None  # the parameters that adapt (None: every one)
    lr: float  # β, Adam's step size
    halve_lr_every: int
    cosine: bool
    regression: bool  # MSE instead of cross-entropy
    meta_step: str  # one of META_STEPS
    seed: int
    checkpoint: Path | None
    log_every: int
    validate: ValidateFn | None
    validate_every: int
    progress: bool
    desc: str


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


def meta_train(model: nn.Module, sampler: TaskSampler, steps: int, *, tasks: int = 4, inner_steps: int = 1,
               inner_lr: float = 0.4, first_order: bool = False, names: list[str] | None = None, lr: float = 1e-3,
               halve_lr_every: int = 0, cosine: bool = False, regression: bool = False, meta_step: str = "loop",
               seed: int, checkpoint: Path | None = None, log_every: int = 50, validate: ValidateFn | None = None,
               validate_every: int = 0, progress: bool = True, desc: str = "maml") -> TrainResult:
    """Meta-train ``model`` for ``steps`` outer steps (Adam, step size ``lr``, cosine-annealed to 0 with ``cosine``,
    or halved every ``halve_lr_every`` steps, or constant) on batches of ``tasks`` tasks, with cross-entropy (MSE if
    ``regression``). ``validate`` / ``validate_every``: model selection on validation tasks, see
    :func:`metalearn.core.train.train`.

    ``first_order`` gives FOMAML, ``names=head_names(model)`` ANIL, ``inner_steps=0`` plain joint training on the
    query sets (the pre-trained baseline). ``meta_step`` picks how the meta-batch is computed, all with the same
    gradients: "loop" (:func:`meta_loss`), "batched" or "parallel" (:mod:`metalearn.gradient.task_batched`), or, when
    only the head adapts, "head" (:func:`~metalearn.gradient.task_batched.anil_meta_loss`: the body runs once per
    task).
    """
    names = check_inner_loop(model, inner_steps, inner_lr, names)
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    if meta_step not in META_STEPS:
        raise ValueError(f"meta_step must be one of {META_STEPS}, got {meta_step!r}")
    if meta_step == "head" and sorted(names) != sorted(head_names(model)):
        raise ValueError(f"meta_step='head' adapts only the head: pass names=head_names(model), got {names}")
    meta_loss_fn = {"loop": meta_loss, "batched": batched_meta_loss, "parallel": parallel_meta_loss,
                    "head": anil_meta_loss}[meta_step]
    loss_fn = F.mse_loss if regression else F.cross_entropy
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = lr_scheduler(opt, steps, halve_lr_every, cosine)

    def step_loss(m: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        loss, out = meta_loss_fn(m, batch, inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                                 names=names, loss_fn=loss_fn)
        return loss, query_metrics(out, batch.query_y)

    return train(model, step_loss, lambda step, g: sampler.sample(tasks, g), steps, opt, seed=seed, scheduler=sched,
                 checkpoint=checkpoint, log_every=log_every, validate=validate, validate_every=validate_every,
                 progress=progress, desc=desc)
