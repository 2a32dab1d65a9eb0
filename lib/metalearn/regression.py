"""Sinusoid regression, MAML's first experiment (Finn et al. 2017, §5.1 and App. C).

A task is y = A sin(x − φ) with A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5]; the learner sees K points and is scored by
the mean squared error on the rest of the curve after a few SGD steps (α = 0.01) from its initialisation. The model
is an MLP 1-40-40-1 with ReLU. The baseline is the same network "pre-trained on all tasks" (joint regression, i.e.
MAML with zero inner steps), fine-tuned the same way at test time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .episodes import RegressionTasks, make_generator, sample_sinusoid
from .evaluate import mean_ci95
from .inner_loop import adapt, check_inner_loop
from .models import mlp


class SinusoidSampler:
    """Sinusoid tasks with ``shots`` support and ``queries`` query points each, on the generator's device."""

    def __init__(self, shots: int, queries: int, name: str = "sinusoid") -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"shots and queries must be >= 1, got {shots}, {queries}")
        self.shots, self.queries, self.name = shots, queries, name

    def sample(self, tasks: int, generator: torch.Generator) -> RegressionTasks:
        """``tasks`` tasks: ``support_x/y [tasks, shots, 1]``, ``query_x/y [tasks, queries, 1]``."""
        return sample_sinusoid(tasks, self.shots, self.queries, generator)


def sinusoid_mlp(hidden: int = 40) -> nn.Sequential:
    """MAML's regression network: 1 -> hidden -> hidden -> 1 with ReLU."""
    return mlp([1, hidden, hidden, 1])


def sinusoid_eval_tasks(shots: int, tasks: int = 600, *, queries: int = 100, seed: int = 0,
                        device: str | torch.device = "cpu") -> RegressionTasks:
    """The seeded test tasks of :func:`adapted_mse`: ``support_x/y [tasks, shots, 1]``, ``query_x/y
    [tasks, queries, 1]``."""
    return SinusoidSampler(shots, queries).sample(tasks, make_generator(seed, device))


def task_mse(model: nn.Module, tasks: RegressionTasks, steps: int, *, inner_lr: float = 0.01) -> np.ndarray:
    """Query MSE of each task before adapting and after each of ``steps`` SGD steps on its support points, starting
    from the model's weights (which are not modified): ``[tasks, steps + 1]``, column k after k steps."""
    check_inner_loop(model, steps, inner_lr, None)
    mse = np.empty((len(tasks.support_x), steps + 1))
    for i, (sx, sy, qx, qy) in enumerate(zip(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y,
                                             strict=True)):
        params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
        for k in range(steps + 1):
            if k:
                params = adapt(model, params, sx, sy, steps=1, inner_lr=inner_lr, first_order=True,
                               loss_fn=F.mse_loss)
            with torch.no_grad():
                mse[i, k] = F.mse_loss(torch.func.functional_call(model, params, (qx,)), qy).item()
    return mse


def adapted_mse(model: nn.Module, shots: int, steps: tuple[int, ...] = (1, 5, 10), *, inner_lr: float = 0.01,
                tasks: int = 600, queries: int = 100, seed: int = 0) -> dict[int, tuple[float, float]]:
    """Mean query MSE (and 95% CI half-width) over ``tasks`` seeded test tasks (:func:`sinusoid_eval_tasks`) after
    each number of SGD steps in ``steps`` on ``shots`` points, starting from the model's weights (which are not
    modified): the means over tasks of :func:`task_mse`'s columns."""
    if not steps or min(steps) < 0:
        raise ValueError(f"steps must be a non-empty tuple of integers >= 0, got {steps}")
    device = next(model.parameters()).device
    mse = task_mse(model, sinusoid_eval_tasks(shots, tasks, queries=queries, seed=seed, device=device), max(steps),
                   inner_lr=inner_lr)
    return {k: mean_ci95(mse[:, k]) for k in steps}
