"""How fast is test-time adaptation? The lib's per-episode loop against the lean engine, side by side in one run:

    lib               ``Adapted.views_per_task`` (:mod:`metalearn.gradient.evaluation`): one episode at a time
                      through ``torch.func.functional_call``, BatchNorm replaced by a forward hook
    task-batched      ``Adapted.views_batched``, for context: every episode in one grouped-convolution pass per layer
                      (the GPU's path; before the lean engine, a CPU's for tasks of at most 25 support images)
    lean loop         :func:`metalearn.gradient.lean.adapted_views` in this process, one episode at a time
    lean (k workers)  the same on the path :func:`metalearn.gradient.lean.plan` picks on a CPU of k >= 2 cores:
                      :class:`~metalearn.gradient.lean.Workers`, k single-thread processes

on test episodes of Omniglot 5-way 1-shot, Omniglot 20-way 5-shot and CIFAR-FS 5-way 5-shot: Finn et al.'s networks
with the paper's filters, freshly initialised (seeded), 10 SGD steps of every parameter but BatchNorm's (step size
0.4 on Omniglot, 0.01 on CIFAR-FS, Finn et al.'s), transductive BatchNorm, 15 queries per class. Each timed call
adapts and scores a batch of episodes; the calls are interleaved, one of each engine per round, and each engine's
median over the rounds is reported, so all of them see the same machine load. Before timing, each lean engine's
outputs are compared with the lib's in float64 on two episodes.

The work of one episode (adaptation and prediction) is counted once, with torch's ``FlopCounterMode`` on the lib's
loop: convolutions and matrix products, forward and backward, nearly all of the arithmetic, and the same in every
engine. Work times episodes per second is an engine's achieved GFLOP/s, and its FLOP efficiency divides that by
what this machine's convolutions do at their best, timed in the same rounds as the engines: one large convolution
(3x3, 64 -> 64 channels, a batch of 256 28x28 images, channels-last, float32, all threads).

    python -m metalearn.study.adaptation_benchmark [--rounds 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn.core.episodes import ClassDataset, Episode, EpisodeSampler, make_generator
from metalearn.gradient import lean
from metalearn.gradient.evaluation import Adapted
from metalearn.gradient.inner_loop import Adaptation
from metalearn.gradient.networks import finn_network
from metalearn.study.maml_benchmark import step_flops, time_interleaved

Setting = tuple[str, int, int]  # (data set, ways, shots)
Engine = Callable[[Episode], list[Tensor]]  # a batch of episodes -> the query outputs of each view
SETTINGS: tuple[Setting, ...] = (("omniglot", 5, 1), ("omniglot", 20, 5), ("cifar_fs", 5, 5))
# episodes per timed call: two to three seconds of the lib's loop each on 2 CPU cores
EPISODES = {("omniglot", 5, 1): 24, ("omniglot", 20, 5): 4, ("cifar_fs", 5, 5): 8}
INNER_LR = {"omniglot": 0.4, "cifar_fs": 0.01}  # Finn et al.'s step sizes (miniImageNet's for CIFAR-FS)
VIEWS: list[lean.View] = [("transductive", slice(None))]  # every query, BatchNorm on the query batch


def reference_convolution(repeats: int = 4) -> tuple[Callable[[], object], int]:
    """What this machine's convolutions do at their best: a call that runs one large convolution ``repeats`` times
    (3x3, 64 -> 64 channels, stride 1, padding 1, a batch of 256 28x28 float32 images stored channels-last, all
    threads), and its floating-point operations."""
    x = torch.randn(256, 64, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3)

    def run() -> None:
        for _ in range(repeats):
            F.conv2d(x, w, None, 1, 1)

    return run, repeats * 2 * 256 * 64 * 28 * 28 * 64 * 9  # a multiply and an add per weight per output position


def lib_engine(model: nn.Module, rule: Adaptation, batched: bool = False) -> Engine:
    """The lib's per-episode loop (``batched``: its task-batched pass instead)."""
    learner = Adapted(model, rule)
    run = learner.views_batched if batched else learner.views_per_task
    return lambda ep: run(ep.support_x, ep.support_y, ep.query_x, VIEWS)


def lean_engine(model: nn.Module, rule: Adaptation, workers: lean.Workers | None) -> Engine:
    """The lean engine, in the ``workers``' processes (None: in this process)."""
    return lambda ep: lean.adapted_views(model, rule, ep.support_x, ep.support_y, ep.query_x, VIEWS, workers=workers)


def head(ep: Episode, tasks: int, dtype: torch.dtype | None = None) -> Episode:
    """The first ``tasks`` episodes of ``ep``, images in ``dtype`` (None: as they are)."""
    def images(x: Tensor) -> Tensor:
        return x[:tasks] if dtype is None else x[:tasks].to(dtype)

    return Episode(images(ep.support_x), ep.support_y[:tasks], images(ep.query_x), ep.query_y[:tasks],
                   ep.classes[:tasks])


def float64_difference(model: nn.Module, rule: Adaptation, ep: Episode, workers: lean.Workers | None,
                       tasks: int = 2) -> float:
    """Max |lib − lean| over the query outputs of the first ``tasks`` episodes of ``ep``, all in float64."""
    model = copy.deepcopy(model).double()
    small = head(ep, tasks, torch.float64)
    pairs = zip(lib_engine(model, rule)(small), lean_engine(model, rule, workers)(small), strict=True)
    return max((a - b).abs().max().item() for a, b in pairs)


def compare(data: Mapping[str, ClassDataset], settings: Sequence[Setting] = SETTINGS,
            episodes: Mapping[Setting, int] | None = None, *, rounds: int = 3, warmup: int = 1, seed: int = 0,
            steps: int = 10, queries: int = 15) -> pd.DataFrame:
    """One row per (setting, engine; the engines of the module docstring): episodes per second (median of ``rounds``
    interleaved calls of ``episodes`` episodes each, after ``warmup``), the speed-up over the lib's loop (its seconds
    / the engine's), the float64 difference from the lib's outputs (lean engines), the GFLOP of one episode, the
    engine's achieved GFLOP/s, the reference convolution's GFLOP/s (:func:`reference_convolution`, timed in the same
    rounds) and the FLOP efficiency (achieved / reference). ``data`` maps "omniglot" and "cifar_fs" to their test
    split."""
    devices = {str(d.device) for d in data.values()}
    if devices != {"cpu"}:
        raise ValueError(f"this benchmark times CPU engines (the worker processes, the CPU's reference convolution); "
                         f"got data on {sorted(devices)}: load the data sets on the CPU")
    episodes = {**EPISODES, **(episodes or {})}
    rows = []
    for key in settings:
        name, ways, shots = key
        d, tasks = data[name], episodes[key]
        torch.manual_seed(seed)
        c, h, w = d.images.shape[2:]
        model = finn_network(name, (c, h, w), ways)
        rule = Adaptation(steps=steps, lr=INNER_LR[name], inner="no_norms", protocol="transductive")
        ep = EpisodeSampler(d, ways, shots, queries).sample(tasks, make_generator(seed, d.device))
        path = lean.plan(model, tasks, d.device)
        with lean.Workers() if path == "workers" else contextlib.nullcontext() as workers:
            paths: dict[str, lean.Workers | None] = {"lean loop": None}
            if workers is not None:
                paths[f"lean ({workers.processes} workers)"] = workers
            differences = {engine: float64_difference(model, rule, ep, w) for engine, w in paths.items()}
            conv, conv_flops = reference_convolution()
            calls: dict[str, Callable[[], object]] = {"reference": conv, "lib": partial(lib_engine(model, rule), ep),
                                                      "task-batched": partial(lib_engine(model, rule, True), ep)}
            calls.update({engine: partial(lean_engine(model, rule, w), ep) for engine, w in paths.items()})
            timed = time_interleaved(calls, rounds, warmup)
        reference = conv_flops / timed.pop("reference")[0] / 1e9
        gflop = step_flops(partial(lib_engine(model, rule), head(ep, 1))) / 1e9
        lib_seconds = timed["lib"][0]
        for engine, (seconds, _) in timed.items():
            rows.append({"setting": f"{name} {ways}w{shots}s", "engine": engine, "episodes per call": tasks,
                         "episodes/s": tasks / seconds, "speed-up": lib_seconds / seconds,
                         "float64 max |diff|": differences.get(engine, float("nan")), "GFLOP per episode": gflop,
                         "GFLOP/s": gflop * tasks / seconds, "reference GFLOP/s": reference,
                         "FLOP efficiency": gflop * tasks / seconds / reference})
    return pd.DataFrame(rows)


def main() -> None:
    from metalearn.datasets.fetch import load_splits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.perf_counter()
    data = load_splits(("test",))["test"]
    df = compare(data, rounds=args.rounds, seed=args.seed)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"{torch.get_num_threads()} threads; {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
