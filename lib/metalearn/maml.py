"""Gradient-based meta-learning: MAML (Finn et al. 2017), first-order MAML, ANIL (Raghu et al. 2020).

The network is used functionally, f(x; θ) = ``torch.func.functional_call(model, θ, x)``, so adapted parameters
θ' are ordinary tensors computed from θ and the meta-gradient flows through them ("a gradient through a gradient").

Inner loop, task τ_i, k steps of SGD on its support set S_i:
    θ'_i = θ − α ∇_θ L_{S_i}(f_θ)                              (repeated k times from θ'_i)
Outer loop, a batch of T tasks (Adam with step size β):
    θ ← θ − β ∇_θ (1/T) Σ_i L_{Q_i}(f_{θ'_i})
    ∇_θ L_Q(f_θ') = Π_j (I − α ∇²L_S(θ_j)) ∇_θ' L_Q               (the Hessian terms, θ_j = θ after j steps)
First-order MAML drops the Hessians (∂θ'/∂θ ≈ I): the meta-gradient is ∇_θ' L_Q, evaluated at θ'.
ANIL adapts only the head (the last linear layer) in the inner loop; the body learns in the outer loop only.

BatchNorm: training and the inner loop normalise with batch statistics. At test time a query is normalised with
the running statistics of training (non-transductive, the default), or with its query batch's statistics
(``transductive=True``, the MAML reference code's protocol and the papers' numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .train import TrainResult, train

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


class Tasks(Protocol):
    """A batch of tasks: ``support_x [T, n, ...]``, ``support_y [T, n, ...]``, ``query_x [T, m, ...]``,
    ``query_y [T, m, ...]`` (an :class:`~metalearn.episodes.Episode` or sinusoid tasks)."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


class TaskSampler(Protocol):
    """Anything with ``sample(tasks, generator) -> Tasks`` (e.g. :class:`~metalearn.episodes.EpisodeSampler`)."""

    def sample(self, tasks: int, generator: torch.Generator) -> Tasks: ...


def parameters(model: nn.Module) -> Params:
    """θ: the model's parameters by name."""
    return dict(model.named_parameters())


def head_names(model: nn.Module) -> list[str]:
    """The parameter names of the model's last ``nn.Linear`` (ANIL's head)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to use as the head")
    head = linears[-1]
    return [f"{head}.{n}" for n, _ in model.get_submodule(head).named_parameters()]


def check_inner_loop(model: nn.Module, inner_steps: int, inner_lr: float, names: Iterable[str] | None) -> list[str]:
    """Validate inner-loop settings before any work; return the names of the parameters the inner loop adapts."""
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
        raise ValueError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
    if not inner_lr > 0:
        raise ValueError(f"inner_lr must be > 0, got {inner_lr!r}")
    known = [n for n, _ in model.named_parameters()]
    names = known if names is None else list(names)
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise ValueError(f"adapted parameter names {unknown or names} are not parameters of {type(model).__name__}; "
                         f"choose from {known} (or metalearn.maml.head_names(model) for ANIL)")
    return names


def adapt(model: nn.Module, params: Params, x: Tensor, y: Tensor, *, steps: int, inner_lr: float,
          first_order: bool = False, names: list[str] | None = None, loss_fn: LossFn = F.cross_entropy,
          buffers: Params | None = None) -> Params:
    """θ' after ``steps`` SGD steps θ ← θ − α ∇L(f_θ(x), y) on one task's support set ``x [n, ...]``, ``y [n, ...]``.

    Only ``names`` (default: all) adapt. Second order (``first_order=False``) keeps the graph of every inner
    gradient, so a later backward through θ' includes the Hessian terms. ``buffers`` (e.g. copies of BatchNorm's
    running statistics) are used instead of the model's own, so the model is not modified.
    """
    names = list(params) if names is None else names
    extra = buffers or {}
    with torch.enable_grad():
        for _ in range(steps):
            loss = loss_fn(functional_call(model, {**params, **extra}, (x,)), y)
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order)
            params = {**params, **{n: params[n] - inner_lr * g for n, g in zip(names, grads, strict=True)}}
    return params


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


def query_metrics(outputs: Tensor, query_y: Tensor) -> dict[str, float]:
    """Query accuracy (%) for class labels; nothing for regression targets."""
    if query_y.dtype in (torch.int64, torch.int32):
        return {"accuracy": (outputs.argmax(-1) == query_y).float().mean().item() * 100}
    return {}


META_STEPS = ("loop", "batched", "parallel", "head")


def train_maml(model: nn.Module, sampler: TaskSampler, steps: int, *, tasks: int = 4, inner_steps: int = 1,
               inner_lr: float = 0.4, first_order: bool = False, names: list[str] | None = None, lr: float = 1e-3,
               halve_lr_every: int = 0, regression: bool = False, meta_step: str = "loop", seed: int,
               checkpoint: Path | None = None, log_every: int = 50, progress: bool = True,
               desc: str = "maml") -> TrainResult:
    """Meta-train ``model`` for ``steps`` outer steps (Adam, step size ``lr``, halved every ``halve_lr_every``
    steps; 0: constant) on batches of ``tasks`` tasks, with cross-entropy (MSE if ``regression``).

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
    from . import anil, fast_maml  # both import this module

    meta_loss_fn = {"loop": meta_loss, "batched": fast_maml.batched_meta_loss,
                    "parallel": fast_maml.parallel_meta_loss, "head": anil.anil_meta_loss}[meta_step]
    loss_fn = F.mse_loss if regression else F.cross_entropy
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, halve_lr_every, 0.5) if halve_lr_every > 0 else None

    def step_loss(m: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        loss, out = meta_loss_fn(m, batch, inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                                 names=names, loss_fn=loss_fn)
        return loss, query_metrics(out, batch.query_y)

    return train(model, step_loss, lambda step, g: sampler.sample(tasks, g), steps, opt, seed=seed, scheduler=sched,
                 checkpoint=checkpoint, log_every=log_every, progress=progress, desc=desc)


class Adapted(nn.Module):
    """A meta-trained network as a few-shot model: for each task, ``inner_steps`` SGD steps on its support set
    (batch statistics), then the query outputs ``[T, m, ...]`` of the adapted network.

    Non-transductive by default (queries normalised with training's running statistics, so a query's prediction
    does not depend on the other queries); ``transductive=True`` normalises the queries with their own batch
    statistics, as MAML's reference code does. Calling it never modifies the wrapped network.
    """

    def __init__(self, model: nn.Module, *, inner_steps: int, inner_lr: float, names: list[str] | None = None,
                 transductive: bool = False, loss_fn: LossFn = F.cross_entropy) -> None:
        super().__init__()
        self.names = check_inner_loop(model, inner_steps, inner_lr, names)
        self.model, self.inner_steps, self.inner_lr = model, inner_steps, inner_lr
        self.transductive, self.loss_fn = transductive, loss_fn

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        """``support_x [T, n, ...]``, ``support_y [T, n]``, ``query_x [T, m, ...]`` -> outputs ``[T, m, ...]``
        (logits ``[T, m, ways]`` for a classifier whose head has ``ways`` outputs)."""
        out = self.outputs(support_x, support_y, query_x, (self.transductive,))[0]
        if ways is not None and out.shape[-1] != ways:
            raise ValueError(f"the network has {out.shape[-1]} outputs but the episode is {ways}-way; "
                             f"build its head with {ways} outputs")
        return out

    def outputs(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                transductive: tuple[bool, ...] = (False, True)) -> list[Tensor]:
        """One adaptation per task, then the query outputs ``[T, m, ...]`` under each BatchNorm protocol of
        ``transductive`` (False: running statistics; True: the query batch's statistics)."""
        model, was_training = self.model, self.model.training
        outputs: list[list[Tensor]] = [[] for _ in transductive]
        try:
            for sx, sy, qx in zip(support_x, support_y, query_x, strict=True):
                buffers = {n: b.clone() for n, b in model.named_buffers()}  # BatchNorm updates copies, not the model
                params = {n: p.detach().requires_grad_(n in self.names) for n, p in model.named_parameters()}
                model.train()
                adapted = adapt(model, params, sx, sy, steps=self.inner_steps, inner_lr=self.inner_lr,
                                first_order=True, names=self.names, loss_fn=self.loss_fn, buffers=buffers)
                for out, mode in zip(outputs, transductive, strict=True):
                    model.train(mode)  # eval mode: the running statistics of training, untouched
                    buffers = {n: b.clone() for n, b in model.named_buffers()}
                    with torch.no_grad():
                        out.append(functional_call(model, {**adapted, **buffers}, (qx,)))
        finally:
            model.train(was_training)
        return [torch.stack(out) for out in outputs]
