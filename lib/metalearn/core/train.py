"""The training loop every method shares: seeded steps, a progress bar, checkpoint and resume, a time budget.

Each step ``t`` draws its batch with a generator seeded from ``(seed, t)`` and reseeds torch's global
generator the same way, so step ``t`` sees the same data and randomness whether the run was
interrupted and resumed or not: a resumed run ends with the same weights and metrics.

Validation and model selection: with ``validate`` (a function of the model returning its accuracy on episodes of
the *validation* classes, fixed seed), the loop scores the model every ``validate_every`` steps and at the end,
logs ``val_accuracy`` against steps and training seconds, and ends with the weights of the best-scoring step: the
checkpoint is chosen on validation classes, never on test.

Budget: every step passes a fixed number of ``examples`` (images, molecules or points drawn for it, stated by each
method's trainer), so a run's budget has a deterministic unit, ``steps × examples``, that a re-run reproduces exactly
(its seconds do not); each logged row and validation check carries ``examples`` seen so far.

Time budget: when the environment variable ``METALEARN_DEADLINE`` (a Unix time, set by
``python -m metalearn.study.pipeline ... --minutes M``) has passed, a run saves its state after the current step
and raises :class:`BudgetExhausted`; run again, it continues from there. Every call makes at least one step.

Snapshots (equal-compute comparisons): with ``snapshots`` (steps), the weights the run would end with if it stopped at
each of those steps (the best validated so far, validated at that step too, or the current ones) are kept in
``TrainResult.snapshots``, so one run gives its checkpoints at several budgets.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from metalearn.core.episodes import make_generator
from metalearn.core.files import atomic_path

M = TypeVar("M", bound=nn.Module)
StepFn = Callable[[M, Any], tuple[torch.Tensor, dict[str, float]]]  # (model, batch) -> (loss, metrics)
BatchFn = Callable[[int, torch.Generator], Any]


DEADLINE_ENV = "METALEARN_DEADLINE"
# deterministic cuBLAS (CUDA), so that a stopped and resumed run on a GPU ends as one never stopped; set before the
# first CUDA matrix product, i.e. at import
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class BudgetExhausted(RuntimeError):
    """Training stopped at the time budget with its state saved: run the same command again to continue."""


class NonFiniteLoss(RuntimeError):
    """The loss (or, at a save, the weights) became NaN or infinite; the last checkpoint (if any) is kept, nothing
    was saved over it."""


def deadline() -> float | None:
    """The Unix time at which training stops and saves (``METALEARN_DEADLINE``), or None (no budget)."""
    value = os.environ.get(DEADLINE_ENV, "")
    try:
        return float(value) if value else None
    except ValueError:
        raise ValueError(f"{DEADLINE_ENV} must be a Unix time in seconds, got {value!r}") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step`` of a run seeded ``seed`` (independent streams per step)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:7], "little")


ValidateFn = Callable[[nn.Module], float]  # model (in eval mode) -> accuracy on validation episodes, percent


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per logged step (step, seconds, loss..)
    seconds: float = 0.0  # wall time of the training steps run in this and earlier (resumed) runs
    resumed_from: int = 0
    validation: list[dict[str, float]] = field(default_factory=list)  # rows of step, seconds, val_accuracy
    best_step: int | None = None  # the step whose weights the model ends with (with validation)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> examples, seconds, best_step, state


@dataclass(frozen=True)
class RunOptions:
    """How a training run is driven, apart from what it learns: its seed (part of a model's key), the file it resumes
    from, how often it saves and logs, its model selection on validation data (``validate`` every
    ``validate_every`` steps; see :func:`train`), its name and progress bar."""

    seed: int
    checkpoint: Path | None = None
    checkpoint_every: int = 500
    log_every: int = 50
    validate: ValidateFn | None = None
    validate_every: int = 0
    desc: str = "train"
    progress: bool = True
    snapshots: tuple[int, ...] = ()


S_contra = TypeVar("S_contra", contravariant=True)


class Trainer(Protocol[S_contra]):
    """A method's entry point typed with its settings: ``train_fn(model, data, steps, settings, run)``, e.g.
    ``train_maml`` is a ``Trainer[MetaTraining]``, so handing it ``Episodic`` settings is a type error (mypy), not
    a failure at run time."""

    __qualname__: str  # a function: a fit's configuration names its trainer

    def __call__(self, model: nn.Module, data: Any, steps: int, settings: S_contra, run: RunOptions, /,
                 ) -> TrainResult: ...


@dataclass(frozen=True)
class Schedule:
    """Adam's step size and its schedule, the settings every trainer shares (each method's settings extend it):
    halved every ``halve_lr_every`` steps (Snell et al.), cosine-annealed to 0 at the last step (``cosine``), or
    constant."""

    lr: float = 1e-3
    halve_lr_every: int = 0
    cosine: bool = False


def adam(model: nn.Module, steps: int, schedule: Schedule,
         ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LRScheduler | None]:
    """Adam over ``model``'s parameters with ``schedule``'s step size, and its learning-rate schedule over
    ``steps`` steps (:func:`lr_scheduler`)."""
    opt = torch.optim.Adam(model.parameters(), lr=schedule.lr)
    return opt, lr_scheduler(opt, steps, schedule.halve_lr_every, schedule.cosine)


def lr_scheduler(optimizer: torch.optim.Optimizer, steps: int, halve_lr_every: int = 0,
                 cosine: bool = False) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule over ``steps`` steps: halved every ``halve_lr_every`` steps (Snell et al.),
    cosine-annealed to 0 at the last step (``cosine``), or constant (neither; returns None)."""
    if halve_lr_every < 0:
        raise ValueError(f"halve_lr_every must be >= 0, got {halve_lr_every}")
    if cosine and halve_lr_every:
        raise ValueError("choose one learning-rate schedule: cosine or halve_lr_every, not both")
    if cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    if halve_lr_every:
        return torch.optim.lr_scheduler.StepLR(optimizer, halve_lr_every, 0.5)
    return None


def train(model: M, loss_fn: StepFn[M], batch_fn: BatchFn, steps: int, optimizer: torch.optim.Optimizer,
          run: RunOptions, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
          examples: int) -> TrainResult:
    """Run ``steps`` optimisation steps of ``loss_fn(model, batch_fn(step, generator))``, driven by ``run``; each
    step's batch holds ``examples`` examples (the budget's deterministic unit, see the module docstring).

    ``batch_fn`` must draw its randomness from the generator it is given (on the model's device).
    With ``run.checkpoint``, the model, optimizer, scheduler, history and best validated weights are saved atomically
    every ``run.checkpoint_every`` steps and at the end, and a run finding a checkpoint resumes from it.
    With ``run.validate``, the model is scored every ``run.validate_every`` steps and after the last one, and ends
    with the weights of the best score (the first, on ties).
    """
    seed, checkpoint, checkpoint_every, log_every = run.seed, run.checkpoint, run.checkpoint_every, run.log_every
    validate, validate_every, desc, progress = run.validate, run.validate_every, run.desc, run.progress
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples (per step) must be an int >= 1, got {examples!r}")
    if checkpoint_every <= 0 or log_every <= 0:
        raise ValueError("checkpoint_every and log_every must be positive")
    if validate is not None and validate_every <= 0:
        raise ValueError(f"validate_every must be positive when validating, got {validate_every}")
    snapshots = run.snapshots
    if list(snapshots) != sorted(set(snapshots)) or any(not 1 <= s <= steps for s in snapshots):
        raise ValueError(f"snapshots must be increasing steps in [1, {steps}], got {snapshots}")
    device = next(model.parameters()).device
    if device.type == "cuda":  # bit-identical resumes on a GPU too (a little slower)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    stop_at = deadline()
    result, start = TrainResult(), 0
    state = read_checkpoint(Path(checkpoint), device) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        result = TrainResult(state["history"], state["seconds"], resumed_from=start)
        running, count = state["running"], state["count"]  # a checkpoint may fall between two log rows
        result.validation, best = state.get("validation", []), state.get("best")
        result.snapshots = state.get("snapshots", {})
        if state.get("device", device.type) != device.type:
            print(f"{desc}: resuming on {device.type} a run saved on {state['device']}: it will not be bit-identical "
                  "to a run never stopped")
    else:
        running, count, best = {}, 0, None

    def save(step: int) -> None:
        if checkpoint is None:
            return
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise NonFiniteLoss(f"{desc}: the weights are not finite after step {step} (the last loss was finite); "
                                f"the checkpoint {checkpoint} is kept as it was. Lower the learning rate and run again")
        state = {"device": device.type, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "step": step, "history": result.history, "seconds": result.seconds,
                 "running": running, "count": count, "validation": result.validation, "best": best,
                 "snapshots": result.snapshots}
        with atomic_path(Path(checkpoint)) as tmp:
            torch.save(state, tmp)

    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, steps), desc=desc, initial=start, total=steps, disable=not progress,
               mininterval=10.0, leave=False)
    last_finite: tuple[int, float] | None = None
    for step in bar:
        s = step_seed(seed, step)
        torch.manual_seed(s)
        batch = batch_fn(step, make_generator(s, device))
        loss, metrics = loss_fn(model, batch)
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            last = (f"the last finite loss was {last_finite[1]:.4g} at step {last_finite[0]}" if last_finite
                    else "no finite loss in this run")
            kept = f"; the checkpoint {checkpoint} is kept as it was" if checkpoint is not None else ""
            raise NonFiniteLoss(f"{desc}: the loss is {value} at step {step + 1}; {last}{kept}. Lower the learning "
                                "rate (or the inner step size) and run again")
        last_finite = (step + 1, value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for k, v in {"loss": value, **metrics}.items():
            running[k] = running.get(k, 0.0) + float(v)
        count += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            row = {"step": step + 1, "examples": (step + 1) * examples,
                   "seconds": round(result.seconds + time.perf_counter() - t0, 2),
                   **{k: v / count for k, v in running.items()}}
            result.history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"}, refresh=False)
            running, count = {}, 0
        snapshot = step + 1 in snapshots
        if validate is not None and ((step + 1) % validate_every == 0 or step + 1 == steps or snapshot):
            result.seconds += time.perf_counter() - t0  # validation time is not training time
            best = _validate_step(model, validate, step + 1, (step + 1) * examples, result, best)
            t0 = time.perf_counter()
        if snapshot:  # the weights a run stopped here would end with (not training time either)
            result.seconds += time.perf_counter() - t0
            weights = best["state"] if best is not None else model.state_dict()
            result.snapshots[step + 1] = {"examples": (step + 1) * examples, "seconds": round(result.seconds, 2),
                                          "best_step": best["step"] if best is not None else None,
                                          "state": {k: v.detach().clone() for k, v in weights.items()}}
            t0 = time.perf_counter()
        out_of_time = stop_at is not None and time.time() >= stop_at and step + 1 < steps
        if ((step + 1) % checkpoint_every == 0 and step + 1 < steps) or out_of_time:
            result.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save(step + 1)
        if out_of_time:
            bar.close()
            raise BudgetExhausted(f"{desc}: stopped at step {step + 1} of {steps} (time budget spent)"
                                  + (f"; its state is saved in {checkpoint}: run again to continue" if checkpoint
                                     is not None else "; no checkpoint was set, so the next run starts over"))
    bar.close()
    result.seconds += time.perf_counter() - t0
    save(steps)
    if best is not None:  # end with the weights chosen on validation classes
        model.load_state_dict(best["state"])
        result.best_step = best["step"]
    model.eval()
    return result


def _validate_step(model: nn.Module, validate: ValidateFn, step: int, examples: int, result: TrainResult,
                   best: dict | None) -> dict | None:
    """Score the model at ``step`` (``examples`` seen; in eval mode), log it, and return the best so far (step,
    score, weights)."""
    model.eval()
    score = float(validate(model))
    model.train()
    result.validation.append({"step": step, "examples": examples, "seconds": round(result.seconds, 2),
                              "val_accuracy": score})
    if best is None or score > best["score"]:
        return {"step": step, "score": score,
                "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    return best


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict | None:
    """A run's saved state, loaded with ``weights_only=True``; None when there is none. An unreadable file
    (truncated, corrupted, or not a checkpoint) is reported and moved aside to ``<name>.bad``, and the run starts
    over: it is never silently used."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or not {"model", "optimizer", "step", "history"} <= set(state):
            raise ValueError("not a training checkpoint (missing model/optimizer/step/history)")
    except Exception as e:  # torch raises several types for a damaged or foreign file
        bad = path.with_suffix(path.suffix + ".bad")
        os.replace(path, bad)
        print(f"refused the checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
              f"moved it to {bad.name} and starting over")
        return None
    return state
