"""MAML's meta-batch across processes, the command line: each of N processes takes T/N of the T tasks, and the
meta-gradient is averaged over the processes with ``torch.distributed`` before every optimiser step (the mechanics:
:mod:`metalearn.gradient.distributed`).

Why the shards' averaged gradient is the whole meta-batch's, and how every process draws the same meta-batch: see
:mod:`metalearn.gradient.distributed`. The result is the single-process run's up to the order of floating-point sums
(the tests check it in float64). NCCL between GPUs, gloo on CPUs.

    torchrun --standalone --nproc_per_node 4 -m metalearn.study.distributed --dataset omniglot --ways 5 --shots 1 \\
        --tasks 32 --steps 60000 --inner-steps 1 --inner-lr 0.4 --out models/maml-omniglot-5w1s.pt

Several machines: the same command on each, with ``--nnodes M --node_rank R --rdzv_endpoint HOST:PORT`` in place
of ``--standalone``. Without torchrun it trains in one process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist

from metalearn.core.episodes import ClassDataset, EpisodeSampler, resolve_device
from metalearn.core.files import atomic_path
from metalearn.core.train import RunOptions
from metalearn.datasets.fetch import load_cifar_fs, load_omniglot
from metalearn.gradient.distributed import GradientAverager, ShardSampler, average_buffers
from metalearn.gradient.inner_loop import INNER
from metalearn.gradient.networks import finn_network
from metalearn.gradient.outer_loop import META_STEPS, MetaTraining, meta_train

LOADERS = {"omniglot": load_omniglot, "cifar_fs": load_cifar_fs}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m metalearn.study.distributed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(LOADERS), default="omniglot")
    p.add_argument("--split", default="train", help="training split (train, or trainval)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--tasks", type=int, default=32, help="meta-batch size T, over all processes (a multiple of N)")
    p.add_argument("--steps", type=int, default=100, help="meta-steps")
    p.add_argument("--inner-steps", type=int, default=1)
    p.add_argument("--inner-lr", type=float, default=0.4)
    p.add_argument("--inner", choices=INNER, default="no_norms",
                   help="what the inner loop adapts (Finn et al.: every parameter but BatchNorm's)")
    p.add_argument("--first-order", action="store_true", help="FOMAML")
    p.add_argument("--meta-step", choices=[s for s in META_STEPS if s != "head"], default="loop")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's step size")
    p.add_argument("--hidden", type=int, help="filters per convolution (default: the paper's, 64 on Omniglot and 32 "
                   "on CIFAR-FS; fewer for fast checks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (each process takes GPU LOCAL_RANK)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--out", type=Path, required=True, help="where rank 0 writes the weights, settings and history")
    p.add_argument("--trace", type=Path, help="also write every step's averaged meta-gradient here (for checks)")
    args = p.parse_args(argv)
    for name in ("ways", "shots", "queries", "tasks", "hidden"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.steps < 0 or args.inner_steps < 0 or not args.inner_lr > 0 or not args.lr > 0:
        p.error("need --steps >= 0, --inner-steps >= 0, --inner-lr > 0 and --lr > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if args.tasks % world:  # before any process group or data: every rank fails the same way
        raise SystemExit(f"--tasks {args.tasks} does not split over {world} processes: use a multiple of {world}")
    device = resolve_device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        images, names = LOADERS[args.dataset](args.split)
        data = ClassDataset.from_numpy(images, names, name=f"{args.dataset}/{args.split}", device=device)
        torch.manual_seed(args.seed)  # the same initial weights in every process
        model = finn_network(args.dataset, cast(tuple[int, int, int], tuple(data.images.shape[2:])), args.ways, args.hidden)
        model = model.to(device=device, dtype=DTYPES[args.dtype])
        sampler = ShardSampler(EpisodeSampler(data, args.ways, args.shots, args.queries), rank, world,
                               DTYPES[args.dtype])
        with GradientAverager(model, trace=args.trace is not None) as averager:
            recipe = MetaTraining(lr=args.lr, tasks=args.tasks, inner_steps=args.inner_steps,
                                  inner_lr=args.inner_lr, inner=args.inner, meta_step=args.meta_step)
            result = meta_train(model, sampler, args.steps, recipe,
                                RunOptions(seed=args.seed, progress=rank == 0, desc=f"maml x{world}"),
                                first_order=args.first_order)
        average_buffers(model)
        if rank == 0:
            settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
            with atomic_path(args.out) as tmp:
                torch.save({"model": model.state_dict(), "settings": settings, "world_size": world,
                            "history": result.history, "seconds": result.seconds}, tmp)
            if args.trace is not None:
                with atomic_path(args.trace) as tmp:
                    torch.save(averager.gradients, tmp)
            print(f"{args.steps} meta-steps of {args.tasks} tasks over {world} process(es) in {result.seconds:.1f} s; "
                  f"wrote {args.out}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
