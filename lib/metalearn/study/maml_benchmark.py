"""How fast is one MAML meta-step? The same second-order step written five ways, timed side by side:

    lib          ``maml.meta_loss``: a loop over tasks with ``torch.func.functional_call``
    lib batched  ``fast_maml.batched_meta_loss``: every task in one grouped-convolution pass per layer
    lib parallel ``fast_maml.parallel_meta_loss``: the tasks split over two threads (one core each)
    torchmeta    ``MetaModule`` layers and ``gradient_update_parameters`` (torchmeta 1.8.0)
    higher       ``higher.innerloop_ctx`` with a differentiable SGD (higher 0.2.1)

on Omniglot episodes with the same weights of Finn et al.'s network (strided Conv-4, 64 filters, every parameter in
the inner loop, as the libraries' MAML examples). Before timing, every implementation's meta-gradient is
checked against the lib's in float64. Timings are float32, interleaved (one step of each implementation per
round), and reported as the median seconds per meta-step, so all of them see the same machine load. The step's
floating-point operations are counted once, on the lib's loop: all five do the same arithmetic (the loop,
torchmeta and higher count equal FLOPs, ``tests/test_maml.py``), while the counter cannot see the batched step's
convolution groups or the parallel step's threads. Work / seconds is each implementation's achieved GFLOP/s: how
close it comes to what the machine's convolutions can do.

    python -m metalearn.study.maml_benchmark --tasks 4 32 --inner-steps 1 5
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from metalearn.core.episodes import ClassDataset, Episode, EpisodeSampler, make_generator
from metalearn.core.models import Classifier
from metalearn.gradient.networks import finn_network
from metalearn.gradient.outer_loop import meta_loss
from metalearn.gradient.task_batched import batched_meta_loss, parallel_meta_loss

Step = Callable[[Episode], dict[str, torch.Tensor]]  # one meta-step: episode -> meta-gradients by parameter name


def lib_step(model: nn.Module, inner_steps: int, inner_lr: float, variant: str = "loop",
             first_order: bool = False, names: list[str] | None = None) -> Step:
    """The lib's meta-step: ``variant`` "loop" (one task at a time), "batched" (all tasks in one pass per layer)
    or "parallel" (tasks split over two threads); first-order MAML if ``first_order``; the inner loop adapts
    ``names`` (default: every parameter)."""
    loss_fn = {"loop": meta_loss, "batched": batched_meta_loss, "parallel": parallel_meta_loss}[variant]

    def step(ep: Episode) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss_fn(model, ep, inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                names=names)[0].backward()
        return {n: cast(torch.Tensor, p.grad) for n, p in model.named_parameters()}

    return step


def torchmeta_step(model: Classifier, inner_steps: int, inner_lr: float) -> Step:
    """The step with torchmeta's MetaModule layers mirroring ``model`` (its convolutions and BatchNorms become
    ``MetaConv2d`` / ``MetaBatchNorm2d`` with the same settings, the other layers are shared), with its weights."""
    importlib.import_module("metalearn.datasets.torchmeta_compat")  # torchmeta 1.8.0 fixes: before importing torchmeta
    from torchmeta.modules import MetaBatchNorm2d, MetaConv2d, MetaLinear, MetaSequential
    from torchmeta.utils.gradient_based import gradient_update_parameters

    def meta(m: nn.Module) -> nn.Module:
        if isinstance(m, nn.Conv2d):
            return MetaConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
        if isinstance(m, nn.BatchNorm2d):
            return MetaBatchNorm2d(m.num_features)
        return m

    leaves = [m for m in model.backbone.modules() if not list(m.children())]
    net = MetaSequential(*(meta(m) for m in leaves), nn.Flatten(),
                         MetaLinear(model.head.in_features, model.head.out_features))
    net = net.to(next(model.parameters()).device, next(model.parameters()).dtype)
    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), net.parameters(), strict=True):
            theirs.copy_(mine)

    def step(ep: Episode) -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        total: torch.Tensor | float = 0.0
        for sx, sy, qx, qy in zip(ep.support_x, ep.support_y, ep.query_x, ep.query_y, strict=True):
            params = None
            for _ in range(inner_steps):
                loss = F.cross_entropy(net(sx, params=params), sy)
                params = gradient_update_parameters(net, loss, params=params, step_size=inner_lr, first_order=False)
            total = total + F.cross_entropy(net(qx, params=params), qy)
        (cast(torch.Tensor, total) / len(ep.support_x)).backward()  # a tensor: an episode has tasks
        return dict(zip((n for n, _ in model.named_parameters()), (p.grad for p in net.parameters()), strict=True))

    return step


def higher_step(model: nn.Module, inner_steps: int, inner_lr: float) -> Step:
    """The step with ``higher.innerloop_ctx`` on a copy of ``model``."""
    import higher

    net = copy.deepcopy(model)
    inner_opt = torch.optim.SGD(net.parameters(), lr=inner_lr)

    def step(ep: Episode) -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        tasks = len(ep.support_x)
        for sx, sy, qx, qy in zip(ep.support_x, ep.support_y, ep.query_x, ep.query_y, strict=True):
            with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False) as (fnet, diffopt):
                for _ in range(inner_steps):
                    diffopt.step(F.cross_entropy(fnet(sx), sy))
                (F.cross_entropy(fnet(qx), qy) / tasks).backward()
        return {n: cast(torch.Tensor, p.grad) for n, p in net.named_parameters()}

    return step


IMPLEMENTATIONS: dict[str, Callable[[Classifier, int, float], Step]] = {
    "lib": lib_step, "lib batched": lambda m, k, a: lib_step(m, k, a, "batched"),
    "lib parallel": lambda m, k, a: lib_step(m, k, a, "parallel"),
    "torchmeta": torchmeta_step, "higher": higher_step}


def time_interleaved(steps: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1,
                     ) -> dict[str, tuple[float, float | None]]:
    """Median seconds of each callable over ``rounds`` rounds (after ``warmup``), one call of each per round so that
    all of them see the same machine load; on CUDA (synchronised) also the peak allocated memory in MB, else None."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds}, {warmup}")
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    times: dict[str, list[float]] = {name: [] for name in steps}
    peak: dict[str, float | None] = dict.fromkeys(steps)
    for r in range(warmup + rounds):
        for name, step in steps.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
                peak[name] = torch.cuda.max_memory_allocated() / 2**20
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), peak[name]) for name, ts in times.items()}


def step_flops(step: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``step`` (forward and backward, as counted by torch's
    ``FlopCounterMode``: convolutions and matrix products, which are nearly all of a Conv-4 step's arithmetic)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def check_gradients(data: ClassDataset, inner_steps: int, inner_lr: float = 0.4, ways: int = 5, shots: int = 1,
                    queries: int = 5, tasks: int = 2, seed: int = 0) -> dict[str, float]:
    """Max relative difference of each implementation's float64 meta-gradient from the lib's."""
    torch.manual_seed(seed)
    model = finn_network("omniglot", cast(tuple[int, int, int], tuple(data.images.shape[2:])), ways).to(data.device).double()
    ep = EpisodeSampler(data, ways, shots, queries).sample(tasks, make_generator(seed, data.device))
    ep = Episode(ep.support_x.double(), ep.support_y, ep.query_x.double(), ep.query_y, ep.classes)
    grads = {name: make(copy.deepcopy(model), inner_steps, inner_lr)(ep) for name, make in IMPLEMENTATIONS.items()}
    ref = grads["lib"]
    scale = max(g.abs().max().item() for g in ref.values())
    return {name: max((g[n] - ref[n]).abs().max().item() for n in ref) / scale for name, g in grads.items()}


def compare(data: ClassDataset, tasks: tuple[int, ...] = (4, 32), inner_steps: tuple[int, ...] = (1, 5),
            inner_lr: float = 0.4, ways: int = 5, shots: int = 1, queries: int = 5, rounds: int = 5, warmup: int = 1,
            seed: int = 0, tolerance: float = 1e-6) -> pd.DataFrame:
    """Seconds per meta-step (median of ``rounds``) of each implementation for each (meta-batch, inner steps),
    after checking that all of them compute the lib's meta-gradient (float64, relative ``tolerance``), with the
    step's GFLOP (counted on the lib's loop) and each implementation's achieved GFLOP/s."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds}, {warmup}")
    rows = []
    for k in inner_steps:
        errors = check_gradients(data, k, inner_lr, ways, shots, queries, seed=seed)
        bad = {name: e for name, e in errors.items() if e > tolerance}
        if bad:
            raise AssertionError(f"meta-gradients differ from the lib's ({k} inner steps): {bad}")
        for t in tasks:
            torch.manual_seed(seed)
            model = finn_network("omniglot", cast(tuple[int, int, int], tuple(data.images.shape[2:])), ways).to(data.device)
            steps = {name: make(copy.deepcopy(model), k, inner_lr) for name, make in IMPLEMENTATIONS.items()}
            ep = EpisodeSampler(data, ways, shots, queries).sample(t, make_generator(seed, data.device))
            timed = time_interleaved({name: partial(step, ep) for name, step in steps.items()}, rounds, warmup)
            gflop = step_flops(partial(steps["lib"], ep)) / 1e9  # the same work for all (see the module docstring)
            for name, (seconds, _) in timed.items():
                rows.append({"implementation": name, "tasks": t, "inner_steps": k, "seconds_per_step": seconds,
                             "gradient_rel_error": errors[name], "gflop_per_step": gflop,
                             "gflops_achieved": gflop / seconds})
    df = pd.DataFrame(rows)
    fastest_other = (df[~df.implementation.str.startswith("lib")].groupby(["tasks", "inner_steps"])
                     .seconds_per_step.min().rename("fastest_library"))
    df = df.join(fastest_other, on=["tasks", "inner_steps"])
    df["speedup_vs_fastest_library"] = df.fastest_library / df.seconds_per_step
    return df


def graph_bytes(loss_fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """``loss_fn()`` and the bytes of the tensors autograd saved for its backward pass (each storage counted once):
    the memory a meta-step holds until ``backward``, measured the same way on any device."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    return loss, sum(storages.values())


def _meta_loss_value(model: nn.Module, tasks: Episode, **kwargs: Any) -> torch.Tensor:
    return meta_loss(model, tasks, **kwargs)[0]


def order_cost(data: ClassDataset, tasks: tuple[int, ...] = (4, 32), inner_steps: tuple[int, ...] = (1, 5),
               inner_lr: float = 0.4, ways: int = 5, shots: int = 1, queries: int = 5, rounds: int = 5,
               warmup: int = 1, seed: int = 0) -> pd.DataFrame:
    """MAML vs first-order MAML, side by side on the same episodes and weights: seconds per meta-step (median of
    ``rounds``, the two interleaved) and the graph memory (:func:`graph_bytes`, MB) of each (meta-batch, inner
    steps); on CUDA also the peak allocated memory (MB)."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds}, {warmup}")
    rows: list[dict[str, Any]] = []
    for k in inner_steps:
        for t in tasks:
            torch.manual_seed(seed)
            model = finn_network("omniglot", cast(tuple[int, int, int], tuple(data.images.shape[2:])), ways).to(data.device)
            ep = EpisodeSampler(data, ways, shots, queries).sample(t, make_generator(seed, data.device))
            for first_order in (False, True):
                _, nbytes = graph_bytes(partial(_meta_loss_value, model, ep, inner_steps=k, inner_lr=inner_lr,
                                                first_order=first_order))
                rows.append({"order": "first" if first_order else "second", "tasks": t, "inner_steps": k,
                             "graph_mb": nbytes / 2**20})
            steps = {order: lib_step(model, k, inner_lr, first_order=order == "first") for order in ("second", "first")}
            timed = time_interleaved({order: partial(step, ep) for order, step in steps.items()}, rounds, warmup)
            for row in rows[-2:]:
                row["seconds_per_step"], peak = timed[row["order"]]
                if peak is not None:
                    row["cuda_peak_mb"] = peak
    return pd.DataFrame(rows)


def main() -> None:
    from metalearn.core.episodes import resolve_device
    from metalearn.datasets.fetch import load_omniglot

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    data = ClassDataset.from_numpy(*load_omniglot("train"), name="omniglot/train", device=resolve_device(args.device))
    df = compare(data, tuple(args.tasks), tuple(args.inner_steps), rounds=args.rounds)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
