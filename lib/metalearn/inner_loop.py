"""The inner loop every gradient-based method shares (MAML, first-order MAML, ANIL, Reptile): the task types, θ by
name, which parameters adapt, and k steps of SGD on a task's support set,

    θ'_i = θ − α ∇_θ L_{S_i}(f_θ)        (repeated k times from θ'_i)

with the network used functionally, f(x; θ) = ``torch.func.functional_call(model, θ, x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]  # a criterion: (outputs, targets) -> scalar loss


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
                         f"choose from {known} (or metalearn.inner_loop.head_names(model) for ANIL)")
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


def query_metrics(outputs: Tensor, query_y: Tensor) -> dict[str, float]:
    """Query accuracy (%) for class labels; nothing for regression targets."""
    if query_y.dtype in (torch.int64, torch.int32):
        return {"accuracy": (outputs.argmax(-1) == query_y).float().mean().item() * 100}
    return {}
