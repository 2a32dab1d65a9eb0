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

The inner loop lives in :mod:`metalearn.inner_loop`, the outer loop (``train_maml``) in :mod:`metalearn.meta_train`.

BatchNorm: training and the inner loop normalise with batch statistics. At test time a query is normalised with
the running statistics of training (non-transductive, the default), or with its query batch's statistics
(``transductive=True``, the MAML reference code's protocol and the papers' numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .inner_loop import LossFn, Tasks, adapt, check_inner_loop, parameters


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
