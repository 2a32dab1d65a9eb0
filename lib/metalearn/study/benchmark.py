"""Episode throughput: the lib's on-device sampler vs torchmeta's ``BatchMetaDataLoader``.

Both draw Omniglot (Vinyals train split, 28x28, 4 rotations) C-way K-shot Q-query episodes in batches
of tasks and hand over float tensors of the same shapes; both are timed in one process, one after the
other, on the same machine, after one warm-up batch. Throughput = episodes (tasks) per second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator


def _episodes_per_second(next_batch: Callable[[], object], tasks: int, batches: int) -> float:
    """Episodes per second of ``batches`` calls of ``next_batch`` (each ``tasks`` episodes), after a warm-up call."""
    next_batch()  # warm-up (first access opens files / allocates)
    t0 = time.perf_counter()
    for _ in range(batches):
        next_batch()
    return tasks * batches / (time.perf_counter() - t0)


def sampler_throughput(train: ClassDataset, torchmeta_root: Path, ways: int = 5, shots: int = 1,
                       queries: int = 15, tasks: int = 32, lib_batches: int = 200,
                       torchmeta_batches: int = 20, seed: int = 0) -> dict[str, float]:
    """Episodes per second of ``lib_sampler`` and ``torchmeta_loader`` (same episode shapes)."""
    from metalearn.datasets.torchmeta_compat import omniglot_loader

    sampler = EpisodeSampler(train, ways, shots, queries)
    g = make_generator(seed, train.device)

    def lib_batch() -> None:
        ep = sampler.sample(tasks, g)
        if ep.support_x.is_cuda:
            torch.cuda.synchronize()

    loader = iter(omniglot_loader(torchmeta_root, ways, shots, queries, tasks, seed=seed))
    return {"lib_sampler": _episodes_per_second(lib_batch, tasks, lib_batches),
            "torchmeta_loader": _episodes_per_second(lambda: next(loader), tasks, torchmeta_batches)}
