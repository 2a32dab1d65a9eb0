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

BatchNorm always normalises with batch statistics, never running ones (as in every reference implementation): in
training and in the inner loop those of the batch at hand; for a test task's queries, those of the support set plus
the one query (Nichol et al.'s non-transductive protocol, the default) or of the query batch (transductive, the
protocol of Finn et al.'s and Raghu et al.'s numbers); see :mod:`metalearn.inner_loop`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .evaluate import PredictFn
from .inner_loop import BN_PROTOCOLS, LossFn, Tasks, adapt, batch_statistics, check_inner_loop, parameters, query_outputs


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
    (BatchNorm with the support set's statistics), then the query outputs ``[T, m, ...]`` of the adapted network
    under a BatchNorm ``protocol`` of :data:`~metalearn.inner_loop.BN_PROTOCOLS`: "nichol" (the default: each query
    normalised with the support set plus itself, so its prediction does not depend on the other queries) or
    "transductive" (the query batch's statistics, as MAML's reference code). Calling it never modifies the network.
    """

    def __init__(self, model: nn.Module, *, inner_steps: int, inner_lr: float, names: list[str] | None = None,
                 protocol: str = "nichol", loss_fn: LossFn = F.cross_entropy) -> None:
        super().__init__()
        self.names = check_inner_loop(model, inner_steps, inner_lr, names)
        if protocol not in BN_PROTOCOLS:
            raise ValueError(f"unknown BatchNorm protocol {protocol!r}; choose from {BN_PROTOCOLS}")
        self.model, self.inner_steps, self.inner_lr = model, inner_steps, inner_lr
        self.protocol, self.loss_fn = protocol, loss_fn

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        """``support_x [T, n, ...]``, ``support_y [T, n]``, ``query_x [T, m, ...]`` -> outputs ``[T, m, ...]``
        (logits ``[T, m, ways]`` for a classifier whose head has ``ways`` outputs)."""
        out = self.outputs(support_x, support_y, query_x, (self.protocol,))[0]
        if ways is not None and out.shape[-1] != ways:
            raise ValueError(f"the network has {out.shape[-1]} outputs but the episode is {ways}-way; "
                             f"build its head with {ways} outputs")
        return out

    def outputs(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                protocols: tuple[str, ...] = BN_PROTOCOLS) -> list[Tensor]:
        """One adaptation per task, then the query outputs ``[T, m, ...]`` under each BatchNorm protocol of
        ``protocols``."""
        model = self.model
        outputs: list[list[Tensor]] = [[] for _ in protocols]
        for sx, sy, qx in zip(support_x, support_y, query_x, strict=True):
            params = {n: p.detach().requires_grad_(n in self.names) for n, p in model.named_parameters()}
            with batch_statistics(model):
                adapted = adapt(model, params, sx, sy, steps=self.inner_steps, inner_lr=self.inner_lr,
                                first_order=True, names=self.names, loss_fn=self.loss_fn)
            with torch.no_grad():
                for out, protocol in zip(outputs, protocols, strict=True):
                    out.append(query_outputs(model, adapted, sx, qx, protocol))
        return [torch.stack(out) for out in outputs]


def adapted_predictor(*, inner_steps: int, inner_lr: float, names: list[str] | None = None,
                      protocol: str = "nichol") -> Callable[[nn.Module], PredictFn]:
    """The test-time rule of a meta-trained network as a function of the network (what a
    :class:`~metalearn.evaluate.Validation` scores at each check): :class:`Adapted` with these settings, predicting
    each query's class. Its name records the settings, so a trained model's key changes with them."""
    if protocol not in BN_PROTOCOLS:
        raise ValueError(f"unknown BatchNorm protocol {protocol!r}; choose from {BN_PROTOCOLS}")

    def predict(model: nn.Module) -> PredictFn:
        learner = Adapted(model, inner_steps=inner_steps, inner_lr=inner_lr, names=names, protocol=protocol)
        return lambda ep: learner(ep.support_x, ep.support_y, ep.query_x).argmax(-1)

    adapted = "all" if names is None else hashlib.sha256(" ".join(sorted(names)).encode()).hexdigest()[:12]
    predict.__qualname__ = (f"adapted_predictor(inner_steps={inner_steps}, inner_lr={inner_lr}, "
                            f"protocol={protocol}, names={adapted})")
    return predict
