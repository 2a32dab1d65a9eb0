"""Meta-training: the outer loop of MAML, first-order MAML and ANIL, with a choice of how a meta-batch is computed.

Outer loop, a batch of T tasks (Adam with step size β):
    θ ← θ − β ∇_θ (1/T) Σ_i L_{Q_i}(f_{θ'_i})
Every meta-step below gives the same gradients; they differ in speed only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anil import anil_meta_loss
from .fast_maml import batched_meta_loss, parallel_meta_loss
from .inner_loop import TaskSampler, check_inner_loop, head_names, query_metrics
from .maml import meta_loss
from .train import TrainResult, ValidateFn, lr_scheduler, train

META_STEPS = ("loop", "batched", "parallel", "head")


def train_maml(model: nn.Module, sampler: TaskSampler, steps: int, *, tasks: int = 4, inner_steps: int = 1,
               inner_lr: float = 0.4, first_order: bool = False, names: list[str] | None = None, lr: float = 1e-3,
               halve_lr_every: int = 0, cosine: bool = False, regression: bool = False, meta_step: str = "loop",
               seed: int, checkpoint: Path | None = None, log_every: int = 50, validate: ValidateFn | None = None,
               validate_every: int = 0, progress: bool = True, desc: str = "maml") -> TrainResult:
    """Meta-train ``model`` for ``steps`` outer steps (Adam, step size ``lr``, cosine-annealed to 0 with ``cosine``,
    or halved every ``halve_lr_every`` steps, or constant) on batches of ``tasks`` tasks, with cross-entropy (MSE if
    ``regression``). ``validate`` / ``validate_every``: model selection on validation tasks, see
    :func:`metalearn.train.train`.

    ``first_order`` gives FOMAML, ``names=head_names(model)`` ANIL, ``inner_steps=0`` plain joint training on the
    query sets (the pre-trained baseline). ``meta_step`` picks how the meta-batch is computed, all with the same
    gradients: "loop" (:func:`meta_loss`), "batched" or "parallel" (:mod:`metalearn.fast_maml`), or, when only the
    head adapts, "head" (:func:`metalearn.anil.anil_meta_loss`: the body runs once per task).
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
