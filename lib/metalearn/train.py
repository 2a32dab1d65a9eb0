"""The training loop every method shares: seeded steps, a progress bar, checkpoint and resume.

Each step ``t`` draws its batch with a generator seeded from ``(seed, t)`` and reseeds torch's global
generator the same way, so step ``t`` sees the same data and randomness whether the run was
interrupted and resumed or not: a resumed run ends with the same weights and metrics.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .episodes import make_generator
from .files import atomic_path

StepFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]  # (model, batch) -> (loss, metrics)
BatchFn = Callable[[int, torch.Generator], Any]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step`` of a run seeded ``seed`` (independent streams per step)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:7], "little")


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per logged step
    seconds: float = 0.0  # wall time of the training steps run in this and earlier (resumed) runs
    resumed_from: int = 0


def train(model: nn.Module, loss_fn: StepFn, batch_fn: BatchFn, steps: int, optimizer: torch.optim.Optimizer,
          *, seed: int, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
          checkpoint: Path | None = None, checkpoint_every: int = 500, log_every: int = 50,
          desc: str = "train", progress: bool = True) -> TrainResult:
    """Run ``steps`` optimisation steps of ``loss_fn(model, batch_fn(step, generator))``.

    ``batch_fn`` must draw its randomness from the generator it is given (on the model's device).
    With ``checkpoint``, the model, optimizer, scheduler and history are saved atomically every
    ``checkpoint_every`` steps and at the end, and a run finding a checkpoint resumes from it.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if checkpoint_every <= 0 or log_every <= 0:
        raise ValueError("checkpoint_every and log_every must be positive")
    device = next(model.parameters()).device
    result, start = TrainResult(), 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        result = TrainResult(state["history"], state["seconds"], resumed_from=start)
        running, count = state["running"], state["count"]  # a checkpoint may fall between two log rows
    else:
        running, count = {}, 0

    def save(step: int) -> None:
        if checkpoint is None:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "step": step, "history": result.history, "seconds": result.seconds,
                 "running": running, "count": count}
        with atomic_path(Path(checkpoint)) as tmp:
            torch.save(state, tmp)

    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, steps), desc=desc, initial=start, total=steps, disable=not progress,
               mininterval=10.0, leave=False)
    for step in bar:
        s = step_seed(seed, step)
        torch.manual_seed(s)
        batch = batch_fn(step, make_generator(s, device))
        loss, metrics = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for k, v in {"loss": loss.item(), **metrics}.items():
            running[k] = running.get(k, 0.0) + float(v)
        count += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            row = {"step": step + 1, **{k: v / count for k, v in running.items()}}
            result.history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"}, refresh=False)
            running, count = {}, 0
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            result.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save(step + 1)
    bar.close()
    result.seconds += time.perf_counter() - t0
    save(steps)
    model.eval()
    return result


def checkpoint_path(root: Path, name: str, config: dict) -> Path:
    """A checkpoint file keyed by ``config`` and the library's source code.

    A changed parameter or a changed line of ``metalearn`` gives a new file, so a stale checkpoint
    is never resumed into results that claim to come from the current code.
    """
    h = hashlib.sha256(repr(sorted(config.items())).encode())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.read_bytes())
    return Path(root) / f"{name}-{h.hexdigest()[:16]}.pt"
