"""Lean test-time adaptation: what ``Adapted.views_per_task`` (:mod:`metalearn.gradient.evaluation`) computes, one
episode at a time, as a few plain functions, 2-4x faster on a CPU.

For each task, θ' after k first-order SGD steps on its support set S = (x, y), then the query outputs,

    θ ← θ − α ∇_θ L(f(x; θ), y)         k times; only the adapted parameters (``names``) move
    ŷ = f(x_q; θ')                      BatchNorm on the query batch's statistics ("transductive"), or on those of
                                        S ∪ {x_q}, each query on its own ("nichol")

exactly as :mod:`metalearn.gradient.inner_loop` does it (``adapt`` / ``adapt_minibatches``, ``batch_statistics``,
``query_outputs``): the outputs agree to rounding (float64: at most 1.4e-12 apart on Finn et al.'s networks and an
MLP, for every ``inner`` choice, Nichol's minibatches and both protocols). What goes is machinery.
:class:`LeanNet` reads the network's layers once and applies them with ``torch.nn.functional`` (no
``torch.func.functional_call``, no forward hook, no module state), and BatchNorm is ``F.batch_norm(training=True)``
without running statistics, the batch's mean μ and biased variance σ² per channel,

    BN(h) = γ (h − μ) / √(σ² + ε) + β

one fused kernel each way where the hook composes five differentiable ops. The supported layers are those of
:mod:`metalearn.gradient.batched`: Conv2d, BatchNorm2d, ReLU, MaxPool2d, AdaptiveAvgPool2d(1), Linear (flattening
before the first Linear), i.e. Finn et al.'s Conv-4 networks and MLPs.

Three things pay, each measured side by side on the 2-core CPU this study runs on (10 steps, transductive
BatchNorm, 15 queries per class, Finn et al.'s networks with fresh weights; episodes/s as multiples of the lib's
loop in the same run, medians of interleaved calls, ranges over 4-5 runs; ``python -m
metalearn.study.adaptation_benchmark`` measures the last two rows again):

                                         Omniglot 5w1s   Omniglot 20w5s   CIFAR-FS 5w5s
    functional layers, F.batch_norm      1.6-1.9x        1.3-1.75x        1.5-1.8x
    + channels-last images and weights   1.5-2.05x       1.6-2.3x         2.3-2.65x
    + 2 single-thread worker processes   3.1-4.1x        1.96-2.4x        2.6-4.1x

Channels-last weights on their own (one thread) gave 1.57x, 1.33x and 1.14x: oneDNN no longer reorders every weight
at every call. The workers pay because a task's small convolutions leave the second thread of a process mostly
idle, while two processes of one thread keep both cores busy. On the same runs the lib reached 6-11%, 23-25% and
12-17% of the GFLOP/s of one large convolution, the lean engine 22-43%, 52-57% and 40-71%.

Tried and left out: task-batched passes (grouped convolutions, as :mod:`metalearn.gradient.batched`; in the workers
1.02x the loop on 5w1s, 0.93x on 20w5s, 0.53x on CIFAR-FS); ``torch.compile`` (28 s to compile one task size, then
1.06-1.15x, one thread, 5w1s); oneDNN off for small tasks (1.24x on Omniglot 5w1s's adaptation, 0.40-0.88x on every
other setting, CIFAR-FS 5w1s included); an in-place ReLU (0.97-1.01x); and, for Nichol's per-query BatchNorm groups,
folding the groups into channels for one ``F.batch_norm`` or an NHWC view (both within 8% of ``torch.var_mean``,
which :func:`batch_norm` keeps).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn.gradient.batched import layers
from metalearn.gradient.inner_loop import (
    BN_PROTOCOLS,
    Adaptation,
    LossFn,
    Params,
    check_inner_loop,
    inner_names,
    minibatches,
)

View = tuple[str, "Tensor | slice"]  # (BatchNorm protocol, index of the queries it scores)
Op = tuple  # one layer, see LeanNet: ("conv", prefix, stride, padding, dilation), ("norm", prefix, eps), ...


def channels_last(x: Tensor) -> Tensor:
    """``x [N, C, H, W]`` (images or convolution weights) stored channels-last (NHWC), the layout in which oneDNN's
    CPU convolutions run fastest at these sizes (2-3x a plain NCHW one here). Built with ``empty(memory_format=...)``
    because ``.contiguous(memory_format=...)`` leaves a one-channel batch as it is (its strides pass for both
    layouts), and from such a first layer on the whole network would run NCHW."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    return x if x.stride() == out.stride() else out.copy_(x)


def batch_norm(h: Tensor, weight: Tensor, bias: Tensor, eps: float, groups: int = 1) -> Tensor:
    """BatchNorm of ``h [N, C, ...]`` on batch statistics: each of ``groups`` equal consecutive slices of the batch
    normalised with its own μ and σ² (biased) per channel, then scaled by γ = ``weight [C]`` and shifted by
    β = ``bias [C]``. No running statistics are read or written."""
    if groups == 1:
        return F.batch_norm(h, None, None, weight, bias, training=True, momentum=0.0, eps=eps)
    g = h.unflatten(0, (groups, -1))  # [groups, N / groups, C, ...]
    var, mean = torch.var_mean(g, dim=(1, *range(3, g.ndim)), correction=0, keepdim=True)
    shape = (-1,) + (1,) * (h.ndim - 2)  # γ and β along the channel dimension
    return ((g - mean) * torch.rsqrt(var + eps) * weight.view(shape) + bias.view(shape)).flatten(0, 1)


class LeanNet:
    """A supported network as a list of layer operations applied functionally: ``net(params, x)`` is the network's
    output at the weights ``params`` ({the model's parameter names: tensors}), BatchNorm on batch statistics. It
    keeps no reference to the module, only names and settings (so it pickles in a few bytes for the workers).
    ``ValueError`` names the first layer the net does not support."""

    def __init__(self, model: nn.Module) -> None:
        self.ops: list[Op] = []
        for name, m in layers(model):
            pre = f"{name}." if name else ""
            if isinstance(m, nn.Conv2d):
                self.ops.append(("conv", pre, m.stride, m.padding, m.dilation))
            elif isinstance(m, nn.BatchNorm2d):
                self.ops.append(("norm", pre, m.eps))
            elif isinstance(m, nn.ReLU):
                self.ops.append(("relu",))
            elif isinstance(m, nn.MaxPool2d):
                self.ops.append(("maxpool", m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode))
            elif isinstance(m, nn.AdaptiveAvgPool2d):  # to 1x1: the mean over positions
                self.ops.append(("mean",))
            else:
                self.ops.append(("linear", pre))

    def __call__(self, params: Params, x: Tensor, groups: int = 1) -> Tensor:
        return self.forward(params, x, groups)

    def forward(self, params: Params, x: Tensor, groups: int = 1) -> Tensor:
        """``x [N, ...]`` -> outputs ``[N, ...]``, BatchNorm normalising each of ``groups`` equal consecutive slices
        of the batch with its own statistics (Nichol's protocol: one group per query). Images run channels-last."""
        h = channels_last(x) if x.ndim == 4 else x
        for op in self.ops:
            kind = op[0]
            if kind == "conv":
                h = F.conv2d(h, params[op[1] + "weight"], params.get(op[1] + "bias"), *op[2:])
            elif kind == "norm":
                h = batch_norm(h, params[op[1] + "weight"], params[op[1] + "bias"], op[2], groups)
            elif kind == "relu":
                h = F.relu(h)
            elif kind == "maxpool":
                h = F.max_pool2d(h, *op[1:])
            elif kind == "mean":
                h = h.mean((2, 3))
            else:
                h = F.linear(h.flatten(1) if h.ndim > 2 else h, params[op[1] + "weight"], params.get(op[1] + "bias"))
        return h


def adapt(net: LeanNet, params: Params, names: Sequence[str], x: Tensor, y: Tensor, *, steps: int, lr: float,
          loss_fn: LossFn = F.cross_entropy, order: Tensor | None = None, minibatch: int | None = None) -> Params:
    """θ' after ``steps`` first-order SGD steps θ ← θ − α ∇_θ L(f(x; θ), y) on one task ``x [n, ...]``, ``y [n]``
    (α = ``lr``); only ``names`` move. Every step uses the whole task or, with ``minibatch`` b < n, step i uses the
    examples ``order[i·b:(i+1)·b]`` of ``order`` cycled as often as the steps need: pass ``torch.randperm(n)`` drawn
    where :func:`metalearn.gradient.inner_loop.adapt_minibatches` draws it, and the steps are Nichol et al.'s, the
    same as there. Returns new tensors without graph (convolution weights channels-last); ``params`` is unchanged."""
    # convolution weights channels-last too: oneDNN then reorders no weight at each call, and the gradients come back
    # in that layout
    params = {n: channels_last(p.detach()) if p.ndim == 4 else p.detach() for n, p in params.items()}
    batches: list[Tensor | None] = [None] * steps  # None: the whole task
    if minibatch is not None and minibatch < len(x):
        if order is None or minibatch < 1:
            raise ValueError(f"minibatch steps need minibatch >= 1 and an index order, got {minibatch} and {order}")
        batches = list(minibatches(order, steps, minibatch))
    for batch in batches:
        xb, yb = (x, y) if batch is None else (x[batch], y[batch])
        live = [params[n].requires_grad_() for n in names]
        with torch.enable_grad():
            grads = torch.autograd.grad(loss_fn(net(params, xb), yb), live)
        for n, p, g in zip(names, live, grads, strict=True):
            params[n] = p.detach() - lr * g  # θ − α ∇L (no graph: first order)
    return params


def query_outputs(net: LeanNet, params: Params, support_x: Tensor, query_x: Tensor, protocol: str,
                  chunk: int = 4096) -> Tensor:
    """The outputs ``[m, ...]`` at ``params`` of one task's queries ``query_x [m, ...]``: BatchNorm on the query
    batch (``"transductive"``) or, for each query, on the support set ``support_x [n, ...]`` plus that query
    (``"nichol"``: m groups of n + 1 images, at most ``chunk`` images per forward pass)."""
    if protocol not in BN_PROTOCOLS:
        raise ValueError(f"unknown BatchNorm protocol {protocol!r}; choose from {BN_PROTOCOLS}")
    with torch.no_grad():
        if protocol == "transductive":
            return net(params, query_x)
        n, per = len(support_x), max(1, chunk // (len(support_x) + 1))
        outputs = []
        for q in query_x.split(per):
            x = torch.cat([support_x.expand(len(q), *support_x.shape), q[:, None]], 1)  # [queries, n + 1, ...]
            outputs.append(net(params, x.flatten(0, 1), groups=len(q)).unflatten(0, (len(q), n + 1))[:, -1])
        return torch.cat(outputs)


def views_per_task(net: LeanNet, theta: Params, names: Sequence[str], support_x: Tensor, support_y: Tensor,
                   query_x: Tensor, views: Sequence[View], *, steps: int, lr: float, loss_fn: LossFn = F.cross_entropy,
                   minibatch: int | None = None, orders: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Each task of ``support_x [T, n, ...]``, ``support_y [T, n]``, ``query_x [T, m, ...]`` adapted from ``theta``
    by :func:`adapt` (task t with minibatch order ``orders[t]``), then for each ``(protocol, index)`` of ``views``
    the outputs ``[T, m', ...]`` of the queries ``query_x[:, index]`` under that protocol, in this process."""
    outputs: list[list[Tensor]] = [[] for _ in views]
    for t, (sx, sy, qx) in enumerate(zip(support_x, support_y, query_x, strict=True)):
        adapted = adapt(net, theta, names, sx, sy, steps=steps, lr=lr, loss_fn=loss_fn,
                        order=None if orders is None else orders[t], minibatch=minibatch)
        for out, (protocol, index) in zip(outputs, views, strict=True):
            out.append(query_outputs(net, adapted, sx, qx[index], protocol))
    return [torch.stack(out) for out in outputs]


def plan(model: nn.Module, tasks: int, device: torch.device | str = "cpu") -> str:
    """The path for ``tasks`` episodes of ``model`` at once: ``"workers"`` (:class:`Workers`: a process of one thread
    per core, each adapting its share of the episodes) for a convolutional network on a CPU with at least two cores
    (torch's thread count) and two episodes, where processes can be forked (Linux, not from a daemonic process), else
    ``"loop"`` (this process, one episode after another).

    Measured on 2 cores (see the module docstring), the workers were faster than the loop in this process in every
    run on Omniglot 5w1s (1.6-2.4x) and CIFAR-FS 5w5s (1.16-1.54x), and level or faster on Omniglot 20w5s
    (0.99-1.25x), whose larger convolutions keep two threads of one process busy anyway. Networks without
    convolutions (the drug-discovery MLPs) were not measured, and stay in this process. On a GPU this module has not
    been measured: there, the task-batched pass of ``Adapted.views`` is the one to use (one kernel per layer for all
    episodes)."""
    forkable = sys.platform.startswith("linux") and not mp.current_process().daemon
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    cores = torch.get_num_threads()
    cpu = torch.device(device).type == "cpu"
    return "workers" if cpu and forkable and convolutional and cores >= 2 and tasks >= 2 else "loop"


def can_send(loss_fn: LossFn) -> bool:
    """Whether ``loss_fn`` can be sent to the worker processes (it pickles: a module-level function)."""
    try:
        pickle.dumps(loss_fn)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def _one_thread() -> None:
    torch.set_num_threads(1)


class Workers:
    """``processes`` forked worker processes of one thread each (None: one per thread torch uses here, i.e. per
    core), for :func:`adapted_views`; a context manager (or :meth:`close` it). Forked, two start in about 25 ms with
    the parent's modules loaded, and they take and return tensors through shared memory
    (:mod:`torch.multiprocessing`). CPU only: CUDA does not survive a fork."""

    def __init__(self, processes: int | None = None) -> None:
        processes = torch.get_num_threads() if processes is None else processes
        if processes < 1:
            raise ValueError(f"need processes >= 1, got {processes}")
        self.processes = processes
        self.pool = mp.get_context("fork").Pool(processes, initializer=_one_thread)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def _views_in_worker(job: tuple) -> list[Tensor]:
    *args, kwargs = job
    return views_per_task(*args, **kwargs)


def adapted_views(model: nn.Module, rule: Adaptation, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                  views: Sequence[View], *, loss_fn: LossFn = F.cross_entropy,
                  workers: Workers | None = None) -> list[Tensor]:
    """``Adapted(model, rule).views_per_task(support_x, support_y, query_x, views)``, faster: each task adapted by
    ``rule`` (steps, step size, what adapts, minibatches; its protocol is not used, ``views`` name theirs), then for
    each ``(protocol, index)`` of ``views`` the outputs ``[T, m', ...]`` of ``query_x[:, index]``. With
    ``workers`` (:class:`Workers`; :func:`plan` says when they pay) the tasks are split evenly among their processes,
    else they run here; the outputs are the same. Minibatch orders are drawn here either way, one ``torch.randperm``
    per task in task order from torch's global generator, as the lib's loop draws them. ``loss_fn`` must pickle for
    the workers (:func:`can_send`). The model is not modified."""
    names = check_inner_loop(model, rule.steps, rule.lr, inner_names(model, rule.inner))
    if workers is not None and (support_x.device.type != "cpu" or not can_send(loss_fn)):
        raise ValueError(f"worker processes take CPU tensors and a loss function that pickles (a module-level "
                         f"function); got {support_x.device} tensors and {loss_fn!r}: pass workers=None")
    # copies: a tensor sent to the workers moves to shared memory, and the model's own parameters must not
    net, theta = LeanNet(model), {n: p.detach().clone() for n, p in model.named_parameters()}
    t, n = support_x.shape[:2]
    orders = None
    if rule.minibatch is not None and rule.minibatch < n:
        orders = [torch.randperm(n, device=support_x.device) for _ in range(t)]
    settings: dict[str, Any] = {"steps": rule.steps, "lr": rule.lr, "loss_fn": loss_fn, "minibatch": rule.minibatch}
    if workers is None:
        return views_per_task(net, theta, names, support_x, support_y, query_x, views, orders=orders, **settings)
    bounds = [round(i * t / workers.processes) for i in range(workers.processes + 1)]
    jobs = [(net, theta, names, support_x[a:b], support_y[a:b], query_x[a:b], list(views),
             {**settings, "orders": None if orders is None else orders[a:b]})
            for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    results = workers.pool.map(_views_in_worker, jobs)
    return [torch.cat([r[i] for r in results]) for i in range(len(views))]
