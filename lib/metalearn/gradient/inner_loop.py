"""The inner loop every gradient-based method shares (MAML, first-order MAML, ANIL, Reptile): the task types, θ by
name, which parameters adapt, k steps of SGD on a task's support set,

    θ'_i = θ − α ∇_θ L_{S_i}(f_θ)        (repeated k times from θ'_i)

with the network used functionally, f(x; θ) = ``torch.func.functional_call(model, θ, x)``, and the BatchNorm
protocols under which the adapted network predicts a task's queries. No reference implementation uses running
statistics: BatchNorm always normalises with statistics of a batch, and the protocols differ in which batch.

    "transductive"  the query batch (Finn et al.'s and Raghu et al.'s code): a query's prediction depends on the
                    other queries of its task.
    "nichol"        the support set plus that one query (Nichol et al. 2018's non-transductive protocol): each query
                    is predicted on its own, from the support set alone.

A method's test-time rule is one typed object, :class:`Adaptation` (steps, step size, what adapts, minibatches, the
BatchNorm protocol of its predictions), carried by the method's settings; ``Adapted``
(:mod:`metalearn.gradient.evaluation`) applies it to many episodes at once. The gradient family's shared module: its
methods meta-train through it, and the drug-discovery chapter scores its meta-initialisations with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn.core.batchnorm import NORMS, batch_statistics

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]  # a criterion: (outputs, targets) -> scalar loss
BN_PROTOCOLS = ("nichol", "transductive")


class Tasks(Protocol):
    """A batch of tasks: ``support_x [T, n, ...]``, ``support_y [T, n, ...]``, ``query_x [T, m, ...]``,
    ``query_y [T, m, ...]`` (an :class:`~metalearn.core.episodes.Episode` or sinusoid tasks)."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


class TaskSampler(Protocol):
    """Anything with ``sample(tasks, generator) -> Tasks`` (e.g. :class:`~metalearn.core.episodes.EpisodeSampler`)."""

    def sample(self, tasks: int, generator: torch.Generator) -> Tasks: ...

    @property
    def examples_per_task(self) -> int: ...  # examples (images, points) one task draws: a budget's unit


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


def without_norms(model: nn.Module) -> list[str]:
    """The names of every parameter but BatchNorm's γ and β: what Finn et al.'s inner loop adapts (their BatchNorm
    parameters learn in the outer loop only)."""
    norms = {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, NORMS)
             for p, _ in m.named_parameters()}
    return [n for n, _ in model.named_parameters() if n not in norms]


INNER = ("no_norms", "all", "head")  # what the inner loop adapts: Finn's (all but BatchNorm), everything, ANIL's head


def inner_names(model: nn.Module, inner: str) -> list[str] | None:
    """The parameters the inner loop adapts: ``"no_norms"`` every one but BatchNorm's γ/β (Finn et al.: they learn in
    the outer loop only), ``"all"`` (None: every one, Reptile), ``"head"`` the last linear layer (ANIL)."""
    if inner not in INNER:
        raise ValueError(f"inner must be one of {INNER}, got {inner!r}")
    return {"no_norms": without_norms, "head": head_names}[inner](model) if inner != "all" else None


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
                         f"choose from {known} (or metalearn.gradient.inner_loop.head_names(model) for ANIL)")
    return names


@dataclass(frozen=True)
class Adaptation:
    """A gradient-based method's test-time rule: how its meta-trained network learns a new task, and how it then
    predicts the task's queries.

        θ' = θ − α ∇_θ L_S(f_θ)          ``steps`` times, α = ``lr``, only the parameters ``inner`` names
                                         (:data:`INNER`); the whole support set S at every step, or (``minibatch``)
                                         the next ``minibatch`` examples of a random order of S (Nichol et al.'s)
        ŷ_q = f_θ'(x_q)                  BatchNorm statistics of the query batch (``protocol="transductive"``) or of
                                         S ∪ {x_q} (``"nichol"``), see :data:`BN_PROTOCOLS`

    Finn et al.'s MAML: ``Adaptation(steps=10, lr=0.4, inner="no_norms", protocol="transductive")``; Nichol et al.'s
    Reptile: ``Adaptation(steps=50, lr=…, inner="all", protocol="nichol", minibatch=5)``. The step size is its own
    field: the papers use the training one, and a chapter says so by setting it equal."""

    steps: int
    lr: float
    inner: str
    protocol: str
    minibatch: int | None = None  # None: every step on the whole support set

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"Adaptation.steps must be an integer >= 0, got {self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"Adaptation.lr must be > 0, got {self.lr!r}")
        if self.inner not in INNER:
            raise ValueError(f"Adaptation.inner must be one of {INNER}, got {self.inner!r}")
        if self.protocol not in BN_PROTOCOLS:
            raise ValueError(f"Adaptation.protocol must be one of {BN_PROTOCOLS}, got {self.protocol!r}")
        if self.minibatch is not None and (self.minibatch < 1 or self.inner != "all"):
            raise ValueError(f"Adaptation.minibatch must be >= 1 and adapts every parameter (inner='all'), as Nichol "
                             f"et al.'s; got minibatch={self.minibatch!r}, inner={self.inner!r}")


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


def adapt_minibatches(model: nn.Module, params: Params, x: Tensor, y: Tensor, *, steps: int, inner_lr: float,
                      batch: int, names: list[str] | None = None, loss_fn: LossFn = F.cross_entropy) -> Params:
    """Nichol et al.'s inner loop: θ' after ``steps`` first-order SGD steps, step i on examples ``order[i·b:(i+1)·b]``
    of a random order of the task's ``x [n, ...]``, ``y [n, ...]`` (b = ``batch``; the order, cycled as often as the
    steps need, comes from torch's global generator). Where b >= n every step uses the whole task (no order drawn)."""
    if batch >= len(x):
        return adapt(model, params, x, y, steps=steps, inner_lr=inner_lr, first_order=True, names=names,
                     loss_fn=loss_fn)
    for b in minibatches(torch.randperm(len(x), device=x.device), steps, batch):
        params = adapt(model, params, x[b], y[b], steps=1, inner_lr=inner_lr, first_order=True, names=names,
                       loss_fn=loss_fn)
    return params


def minibatches(order: Tensor, steps: int, batch: int) -> list[Tensor]:
    """The example indices of ``steps`` minibatches of ``batch``: step i takes ``order[i·b:(i+1)·b]`` of ``order``
    (a permutation of a task's n examples) cycled ⌈k·b / n⌉ times."""
    cycled = order.repeat(-(-steps * batch // len(order)))
    return [cycled[i * batch:(i + 1) * batch] for i in range(steps)]


def query_metrics(outputs: Tensor, query_y: Tensor) -> dict[str, float]:
    """Query accuracy (%) for class labels; nothing for regression targets."""
    if query_y.dtype in (torch.int64, torch.int32):
        return {"accuracy": (outputs.argmax(-1) == query_y).float().mean().item() * 100}
    return {}


def query_outputs(model: nn.Module, params: Params, support_x: Tensor, query_x: Tensor, protocol: str,
                  chunk: int = 4096) -> Tensor:
    """The outputs ``[m, ...]`` of the network at ``params`` (θ') for one task's queries ``query_x [m, ...]``, with
    BatchNorm statistics from the query batch (``protocol="transductive"``) or, for each query, from the support set
    ``support_x [n, ...]`` plus that query (``"nichol"``: m groups of n + 1 images, at most ``chunk`` images per
    forward pass). Running statistics are neither used nor changed."""
    if protocol not in BN_PROTOCOLS:
        raise ValueError(f"unknown BatchNorm protocol {protocol!r}; choose from {BN_PROTOCOLS}")
    if protocol == "transductive":
        with batch_statistics(model):
            return functional_call(model, params, (query_x,))
    n, per = len(support_x), max(1, chunk // (len(support_x) + 1))
    outputs = []
    for q in query_x.split(per):
        x = torch.cat([support_x.expand(len(q), *support_x.shape), q[:, None]], 1)  # [queries, n + 1, ...]
        with batch_statistics(model, groups=len(q)):
            outputs.append(functional_call(model, params, (x.flatten(0, 1),)).unflatten(0, (len(q), n + 1))[:, -1])
    return torch.cat(outputs)
