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

The inner loop lives in :mod:`metalearn.gradient.inner_loop` (with the typed test-time rule, ``Adaptation``, that
``MetaTraining.test`` carries), the outer loop that MAML, FOMAML (:mod:`~metalearn.gradient.fomaml`) and ANIL
(:mod:`~metalearn.gradient.anil`) share in :mod:`metalearn.gradient.outer_loop`, and the evaluation of an adapted
network in :mod:`metalearn.gradient.evaluation`.

BatchNorm always normalises with batch statistics, never running ones (as in every reference implementation): in
training and in the inner loop those of the batch at hand; for a test task's queries, those of the support set plus
the one query (Nichol et al.'s non-transductive protocol) or of the query batch (transductive, the protocol of Finn
et al.'s and Raghu et al.'s numbers, MAML's own rule here); see :mod:`metalearn.gradient.inner_loop`.
"""

from __future__ import annotations

from torch import nn

from metalearn.core.train import RunOptions, TrainResult
from metalearn.gradient.inner_loop import TaskSampler
from metalearn.gradient.outer_loop import MetaTraining, meta_train


def train_maml(model: nn.Module, sampler: TaskSampler, steps: int, settings: MetaTraining,
               run: RunOptions) -> TrainResult:
    """MAML: ``steps`` meta-steps whose meta-gradient flows through the inner loop (the Hessian terms above kept);
    ``settings.inner``: the parameters that adapt, e.g. every one but BatchNorm's as in Finn et al."""
    return meta_train(model, sampler, steps, settings, run, first_order=False)
