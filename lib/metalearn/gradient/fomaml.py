"""First-order MAML (FOMAML, Finn et al. 2017 §5.2): MAML without the Hessian terms.

MAML's meta-gradient of a task differentiates through the inner loop,
    ∇_θ L_Q(f_θ') = Π_j (I − α ∇²L_S(θ_j)) ∇_θ' L_Q,
FOMAML treats the adapted weights as a constant shift of θ (∂θ'/∂θ ≈ I), so the meta-gradient is the query loss's
gradient at the adapted weights,
    ∇_θ L_Q(f_θ') ≈ ∇_θ' L_Q(f_θ'),
which needs no second derivatives: one backward pass per inner step fewer, and no graph of the inner loop to keep.
Everything else (inner loop, outer loop, test-time rule) is MAML's.
"""

from __future__ import annotations

from torch import nn

from metalearn.core.train import RunOptions, TrainResult
from metalearn.gradient.inner_loop import TaskSampler
from metalearn.gradient.outer_loop import MetaTraining, meta_train


def train_fomaml(model: nn.Module, sampler: TaskSampler, steps: int, settings: MetaTraining,
                 run: RunOptions) -> TrainResult:
    """FOMAML: ``steps`` meta-steps with the first-order meta-gradient ∇_θ' L_Q(f_θ')."""
    return meta_train(model, sampler, steps, settings, run, first_order=True)
