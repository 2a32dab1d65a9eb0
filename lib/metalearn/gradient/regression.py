"""Sinusoid regression, MAML's first experiment (Finn et al. 2017, §5.1 and App. C).

A task is y = A sin(x − φ) with A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5]; the learner sees K points and is scored by
the mean squared error on the rest of the curve after a few SGD steps (α = 0.01) from its initialisation. The model
is an MLP 1-40-40-1 with ReLU. The baseline is the same network "pre-trained on all tasks" (joint regression, i.e.
MAML with zero inner steps), fine-tuned the same way at test time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metalearn.core.episodes import RegressionTasks, make_generator, sample_sinusoid
from metalearn.core.evaluate import mean_ci95
from metalearn.core.models import mlp
from metalearn.gradient.inner_loop import adapt, check_inner_loop


class SinusoidSampler:
    """Sinusoid tasks with ``shots`` support and ``queries`` query points each, on the generator's device."""

    def __init__(self, shots: int, queries: int, name: str = "sinusoid") -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"shots and queries must be >= 1, got {shots}, {queries}")
        self.shots, self.queries, self.name = shots, queries, name

    @property
    def examples_per_task(self) -> int:
        """Points one task draws: ``shots + queries`` (a training budget's unit)."""
        return self.shots + self.queries

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


def diverged(mse: np.ndarray) -> np.ndarray:
    """Which tasks of :func:`task_mse`'s ``[tasks, steps + 1]`` table SGD made worse: more than ten times the MSE
    they had before adapting, after the last step, or not finite. ``[tasks]`` booleans."""
    return ~(mse[:, -1] <= 10 * mse[:, 0])  # NaN compares False: a task that overflowed diverged


def choose_inner_lr(model: nn.Module, candidates: Sequence[float], *, shots: int, steps: int, tasks: int = 600,
                    seed: int) -> tuple[float, list[dict[str, float]]]:
    """The test-time SGD step size α chosen on *training* tasks: ``tasks`` fresh tasks of the training distribution
    (seed ``seed``, which must not be the test tasks'), adapted with ``steps`` SGD steps on ``shots`` points for each
    α in ``candidates``; the chosen α has the lowest mean query MSE after the last step. Gradient descent is stable
    only while α < 2/λ_max of the task's loss, and a few sharp tasks can break that at the paper's α. Returns the
    choice and one record per candidate: ``inner lr``, ``mean``, ``median`` and ``diverged`` (tasks, see
    :func:`diverged`)."""
    if not candidates or min(candidates) <= 0:
        raise ValueError(f"candidates must be step sizes > 0, got {candidates}")
    device = next(model.parameters()).device
    data = sinusoid_eval_tasks(shots, tasks, seed=seed, device=device)
    records = []
    for lr in candidates:
        mse = task_mse(model, data, steps, inner_lr=lr)
        last = np.where(np.isfinite(mse[:, -1]), mse[:, -1], np.inf)  # an overflow is an infinite error
        records.append({"inner lr": lr, "mean": float(last.mean()), "median": float(np.median(last)),
                        "diverged": int(diverged(mse).sum())})
    best = min(records, key=lambda r: r["mean"])
    return best["inner lr"], records
