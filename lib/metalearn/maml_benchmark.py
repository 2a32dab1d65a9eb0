"""How fast is one MAML meta-step? The same second-order step written five ways, timed side by side:

    lib          ``maml.meta_loss``: a loop over tasks with ``torch.func.functional_call``
    lib batched  ``fast_maml.batched_meta_loss``: every task in one grouped-convolution pass per layer
    lib parallel ``fast_maml.parallel_meta_loss``: the tasks split over two threads (one core each)
    torchmeta    ``MetaModule`` layers and ``gradient_update_parameters`` (torchmeta 1.8.0)
    higher       ``higher.innerloop_ctx`` with a differentiable SGD (higher 0.2.1)

on Omniglot episodes with the same Conv-4 weights. Before timing, every implementation's meta-gradient is
checked against the lib's in float64. Timings are float32, interleaved (one step of each implementation per
round), and reported as the median seconds per meta-step, so all of them see the same machine load.

    python -m metalearn.maml_benchmark --tasks 4 32 --inner-steps 1 5
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .episodes import ClassDataset, Episode, EpisodeSampler, make_generator
from .fast_maml import batched_meta_loss, parallel_meta_loss
from .maml import meta_loss
from .models import conv4_for
from .pretrain import Classifier

Step = Callable[[Episode], dict[str, torch.Tensor]]  # one meta-step: episode -> meta-gradients by parameter name


def lib_step(model: nn.Module, inner_steps: int, inner_lr: float, variant: str = "loop") -> Step:
    """The lib's meta-step: ``variant`` "loop" (one task at a time), "batched" (all tasks in one pass per layer)
    or "parallel" (tasks split over two threads)."""
    loss_fn = {"loop": meta_loss, "batched": batched_meta_loss, "parallel": parallel_meta_loss}[variant]

    def step(ep: Episode) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss_fn(model, ep, inner_steps=inner_steps, inner_lr=inner_lr)[0].backward()
        return {n: p.grad for n, p in model.named_parameters()}

    return step


def torchmeta_step(model: Classifier, inner_steps: int, inner_lr: float) -> Step:
    """The step with torchmeta's MetaModule layers, initialised with ``model``'s weights."""
    importlib.import_module("metalearn.torchmeta_compat")  # torchmeta 1.8.0 fixes: before importing torchmeta
    from torchmeta.modules import MetaBatchNorm2d, MetaConv2d, MetaLinear, MetaSequential
    from torchmeta.utils.gradient_based import gradient_update_parameters


    def block(cin: int, cout: int) -> MetaSequential:
        return MetaSequential(MetaConv2d(cin, cout, 3, padding=1), MetaBatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    convs = [b[0] for b in model.backbone.blocks]
    net = MetaSequential(*(block(c.in_channels, c.out_channels) for c in convs), nn.Flatten(),
                         MetaLinear(model.head.in_features, model.head.out_features))
    net = net.to(next(model.parameters()).device, next(model.parameters()).dtype)
    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), net.parameters(), strict=True):
            theirs.copy_(mine)

    def step(ep: Episode) -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        total = 0.0
        for sx, sy, qx, qy in zip(ep.support_x, ep.support_y, ep.query_x, ep.query_y, strict=True):
            params = None
            for _ in range(inner_steps):
                loss = F.cross_entropy(net(sx, params=params), sy)
                params = gradient_update_parameters(net, loss, params=params, step_size=inner_lr, first_order=False)
            total = total + F.cross_entropy(net(qx, params=params), qy)
        (total / len(ep.support_x)).backward()
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
        return {n: p.grad for n, p in net.named_parameters()}

    return step


IMPLEMENTATIONS = {"lib": lib_step, "lib batched": lambda m, k, a: lib_step(m, k, a, "batched"),
                   "lib parallel": lambda m, k, a: lib_step(m, k, a, "parallel"),
                   "torchmeta": torchmeta_step, "higher": higher_step}


def check_gradients(data: ClassDataset, inner_steps: int, inner_lr: float = 0.4, ways: int = 5, shots: int = 1,
                    queries: int = 5, tasks: int = 2, seed: int = 0) -> dict[str, float]:
    """Max relative difference of each implementation's float64 meta-gradient from the lib's."""
    torch.manual_seed(seed)
    model = Classifier(conv4_for(tuple(data.images.shape[2:])), ways).double().to(data.device)
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
    after checking that all of them compute the lib's meta-gradient (float64, relative ``tolerance``)."""
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
            model = Classifier(conv4_for(tuple(data.images.shape[2:])), ways).to(data.device)
            steps = {name: make(copy.deepcopy(model), k, inner_lr) for name, make in IMPLEMENTATIONS.items()}
            ep = EpisodeSampler(data, ways, shots, queries).sample(t, make_generator(seed, data.device))
            times: dict[str, list[float]] = {name: [] for name in steps}
            for r in range(warmup + rounds):
                for name, step in steps.items():
                    if data.device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    step(ep)
                    if data.device.type == "cuda":
                        torch.cuda.synchronize()
                    if r >= warmup:
                        times[name].append(time.perf_counter() - t0)
            for name, ts in times.items():
                rows.append({"implementation": name, "tasks": t, "inner_steps": k,
                             "seconds_per_step": statistics.median(ts), "gradient_rel_error": errors[name]})
    df = pd.DataFrame(rows)
    fastest_other = (df[~df.implementation.str.startswith("lib")].groupby(["tasks", "inner_steps"])
                     .seconds_per_step.min().rename("fastest_library"))
    df = df.join(fastest_other, on=["tasks", "inner_steps"])
    df["speedup_vs_fastest_library"] = df.fastest_library / df.seconds_per_step
    return df


def main() -> None:
    from .data import load_omniglot
    from .episodes import resolve_device

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
