"""ANIL, "Almost No Inner Loop" (Raghu, Raghu, Bengio & Vinyals 2020): rapid learning or feature reuse?

MAML adapts every layer in the inner loop. Raghu et al. find that after MAML's inner loop the body's representations
barely change (feature reuse); only the head (the last linear layer) learns rapidly. ANIL therefore adapts only the
head, θ = (θ_body, w):
    w'_i = w − α ∇_w L_{S_i}(w; f_{θ_body}(x))                   (inner loop: the head only)
    θ ← θ − β ∇_θ (1/T) Σ_i L_{Q_i}(w'_i; f_{θ_body}(x))          (outer loop: body and head)
Since the body does not change in the inner loop, its features f(x) are computed once per task and every inner step
is a step of logistic regression on them: :func:`~metalearn.gradient.task_batched.anil_meta_loss` gives the same gradients as
``outer_loop.meta_loss(..., names=head_names(model))``, which runs the whole network at every inner step.

Feature reuse is measured with linear CKA (Kornblith et al. 2019) between a layer's representations of the same
query images before (θ) and after (θ') the inner loop: 1 means the layer's representation did not change beyond a
rotation and scaling.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metalearn.core.batchnorm import batch_statistics
from metalearn.core.train import RunOptions, TrainResult
from metalearn.gradient.inner_loop import Tasks, TaskSampler, adapt, check_inner_loop
from metalearn.gradient.outer_loop import MetaTraining, meta_train


def train_anil(model: nn.Module, sampler: TaskSampler, steps: int, settings: MetaTraining, run: RunOptions, *,
               first_order: bool = False) -> TrainResult:
    """ANIL: ``steps`` meta-steps whose inner loop adapts only the head (``settings.inner`` must be ``"head"``);
    ``meta_step="head"`` runs the body once per task."""
    if settings.inner != "head":
        raise ValueError(f"ANIL adapts only the head: set inner='head' in its settings, got {settings.inner!r}")
    return meta_train(model, sampler, steps, settings, run, first_order=first_order)


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA of two representations of the same n examples, ``x [n, ...]`` and ``y [n, ...]`` (flattened per
    example), in [0, 1] and invariant to rotations and scaling, from the Gram matrices K = X Xᵀ and L = Y Yᵀ
    ``[n, n]`` centred by H = I − 11ᵀ/n:  ⟨HKH, HLH⟩_F / (‖HKH‖_F ‖HLH‖_F). It equals the feature-space form
    ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F) on centred features, but costs n × n memory instead of d × d for d features."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need the same number (>= 2) of examples in both representations, got {x.shape[0]} and "
                         f"{y.shape[0]}")
    x, y = x.flatten(1).double(), y.flatten(1).double()
    n = x.shape[0]
    h = torch.eye(n, dtype=x.dtype, device=x.device) - 1.0 / n
    kc, lc = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return (kc * lc).sum() / (kc.norm() * lc.norm())


def layer_similarity(model: nn.Module, layers: Mapping[str, nn.Module], tasks: Tasks, *, inner_steps: int,
                     inner_lr: float, names: list[str] | None = None) -> dict[str, list[float]]:
    """For each task: adapt a copy of the weights on its support set (``inner_steps`` SGD steps of ``names``,
    default all), then the linear CKA between each layer's outputs on the task's queries before and after adaptation.
    BatchNorm uses batch statistics throughout (the support set's, then the query batch's). Returns
    ``{layer: [CKA per task]}``; the model is not modified."""
    names = check_inner_loop(model, inner_steps, inner_lr, names)
    captured: dict[str, Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, key=key: captured.__setitem__(key, out.detach()))
             for key, m in layers.items()]
    similarity: dict[str, list[float]] = {key: [] for key in layers}
    try:
        for sx, sy, qx in zip(tasks.support_x, tasks.support_y, tasks.query_x, strict=True):
            theta = {n: p.detach().requires_grad_(n in names) for n, p in model.named_parameters()}
            with batch_statistics(model):
                adapted = adapt(model, theta, sx, sy, steps=inner_steps, inner_lr=inner_lr, first_order=True,
                                names=names)
                reps = []
                with torch.no_grad():
                    for params in (theta, adapted):
                        functional_call(model, params, (qx,))
                        reps.append(dict(captured))
            for key in layers:
                similarity[key].append(linear_cka(reps[0][key], reps[1][key]).item())
    finally:
        for h in hooks:
            h.remove()
    return similarity
