"""MAML's meta-batch across processes, the mechanics: each of N processes takes T/N of the T tasks
(:class:`ShardSampler`), and the meta-gradient is averaged over the processes with ``torch.distributed`` before every
optimiser step (:class:`GradientAverager`).

The meta-gradient of a batch of T tasks splits over any partition of the tasks into N shards of T/N:

    ∇θ (1/T) Σ_{i=1..T} L_{Q_i}(f_{θ'_i})  =  (1/N) Σ_{r=1..N} ∇θ [ (N/T) Σ_{i in shard r} L_{Q_i}(f_{θ'_i}) ]

so process r computes its shard's mean meta-loss and gradient (any meta-step of
:func:`metalearn.gradient.outer_loop.meta_train`), an all-reduce averages the N gradients, and every process applies
the same Adam step to the same weights. Every process draws the same meta-batch (the trainer seeds each step's
generator with the step's seed, not the process's) and keeps its own contiguous shard. BatchNorm's running
statistics, which MAML's test protocols do not use, are averaged over the processes at the end
(:func:`average_buffers`). The command line is :mod:`metalearn.study.distributed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


class ShardSampler:
    """Draws the whole meta-batch of ``tasks`` tasks with ``sampler`` and returns shard ``rank`` of ``world``: tasks
    ``[rank*T/N, (rank+1)*T/N)`` of every field (``[T, ...]`` -> ``[T/N, ...]``), floating fields cast to ``dtype``."""

    def __init__(self, sampler: Any, rank: int, world: int, dtype: torch.dtype | None = None) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world size, got rank {rank} of {world}")
        self.sampler, self.rank, self.world, self.dtype = sampler, rank, world, dtype

    @property
    def examples_per_task(self) -> int:
        return int(self.sampler.examples_per_task)

    def sample(self, tasks: int, generator: torch.Generator) -> Any:
        if tasks % self.world:
            raise ValueError(f"a meta-batch of {tasks} tasks does not split over {self.world} processes: "
                             f"use a multiple of {self.world}")
        batch = self.sampler.sample(tasks, generator)
        share = tasks // self.world
        lo, hi = self.rank * share, (self.rank + 1) * share

        def cut(t: Tensor) -> Tensor:
            t = t[lo:hi]
            return t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t

        return type(batch)(**{f.name: cut(getattr(batch, f.name)) for f in fields(batch)})


class GradientAverager:
    """While active (``with``), each parameter's gradient is averaged over the process group as soon as backward has
    accumulated it (``all_reduce`` of the sum, divided by the world size). ``trace=True`` keeps every averaged
    gradient: ``gradients[name]`` is a list with one tensor per step."""

    def __init__(self, model: nn.Module, trace: bool = False) -> None:
        self.model, self.trace = model, trace
        self.gradients: dict[str, list[Tensor]] = {n: [] for n, p in model.named_parameters() if p.requires_grad}
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Callable[[Tensor], None]:
        def average(p: Tensor) -> None:
            assert p.grad is not None  # a post-accumulate-grad hook: the gradient is there
            if dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= dist.get_world_size()
            if self.trace:
                self.gradients[name].append(p.grad.detach().clone())

        return average

    def __enter__(self) -> GradientAverager:
        self._handles = [p.register_post_accumulate_grad_hook(self._hook(n))
                         for n, p in self.model.named_parameters() if p.requires_grad]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm's running statistics) over the process group."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for b in model.buffers():
            if b.is_floating_point():
                dist.all_reduce(b, op=dist.ReduceOp.SUM)
                b /= dist.get_world_size()
