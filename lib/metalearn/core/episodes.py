"""Few-shot episodes: C-way K-shot Q-query tasks, batches of tasks, and sinusoid regression tasks.

A *task* (episode) draws C classes, then K support and Q query examples of each class:

    S = {(x_i, y_i)}_{i=1}^{C*K}        (support set: what the learner adapts on)
    Q = {(x_j, y_j)}_{j=1}^{C*Q}        (query set: what it is scored on)

Labels 0..C-1 are assigned per task in a random class order, so a model cannot memorise classes.
Sampling happens on the data's device (CPU or CUDA) from one preloaded uint8 tensor with a seeded
``torch.Generator``: no per-image Python work, no worker processes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=resolve_device(device))
    g.manual_seed(int(seed))
    return g


@dataclass
class ClassDataset:
    """Images grouped by class: ``images`` uint8 ``[classes, per_class, C, H, W]`` on one device."""

    images: Tensor
    class_names: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 5:
            raise ValueError(f"images must be [classes, per_class, C, H, W], got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (0..255), got {self.images.dtype}")
        if len(self.class_names) != self.images.shape[0]:
            raise ValueError(f"{len(self.class_names)} class names for {self.images.shape[0]} classes")

    @classmethod
    def from_numpy(cls, images: np.ndarray, class_names: list[str], name: str = "",
                   device: str | torch.device = "cpu") -> ClassDataset:
        """Wrap uint8 ``images [classes, per_class, C, H, W]`` and move them to ``device``."""
        return cls(torch.from_numpy(images).to(resolve_device(device)), list(class_names), name)

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def per_class(self) -> int:
        return self.images.shape[1]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @cached_property
    def digest(self) -> str:
        """sha256 of the images and class names: what a trained model's key records of its data."""
        h = hashlib.sha256(repr((tuple(self.images.shape), self.class_names)).encode())
        h.update(self.images.cpu().numpy().tobytes())
        return h.hexdigest()

    def to(self, device: str | torch.device) -> ClassDataset:
        return ClassDataset(self.images.to(resolve_device(device)), self.class_names, self.name)


@dataclass
class Episode:
    """A batch of few-shot tasks.

    ``support_x`` ``[tasks, ways*shots, C, H, W]``, ``support_y`` ``[tasks, ways*shots]`` (int64 in 0..ways-1),
    ``query_x`` ``[tasks, ways*queries, C, H, W]``, ``query_y`` ``[tasks, ways*queries]``;
    ``classes`` ``[tasks, ways]``: the dataset class behind each task label.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: Tensor


def _check_positive(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class EpisodeSampler:
    """Draws C-way K-shot Q-query episodes from a :class:`ClassDataset`.

    Arguments are validated before any work: ``ways`` at most the number of classes, ``shots + queries``
    at most the examples per class, every count positive (``ValueError`` naming the limit otherwise).
    """

    def __init__(self, dataset: ClassDataset, ways: int, shots: int, queries: int) -> None:
        _check_positive(ways=ways, shots=shots, queries=queries)
        if ways > dataset.num_classes:
            raise ValueError(f"ways={ways} exceeds the {dataset.num_classes} classes of {dataset.name or 'the dataset'}")
        if shots + queries > dataset.per_class:
            raise ValueError(f"shots + queries = {shots + queries} exceeds the {dataset.per_class} examples "
                             f"per class of {dataset.name or 'the dataset'}")
        self.dataset, self.ways, self.shots, self.queries = dataset, ways, shots, queries

    @property
    def examples_per_task(self) -> int:
        """Images one episode draws: ``ways × (shots + queries)`` (a training budget's unit)."""
        return self.ways * (self.shots + self.queries)

    def sample_indices(self, tasks: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Class indices ``[tasks, ways]`` and example indices ``[tasks, ways, shots+queries]``."""
        _check_positive(tasks=tasks)
        d = self.dataset
        # a random permutation per task = argsort of uniform noise (one kernel for the whole batch)
        classes = torch.rand(tasks, d.num_classes, generator=generator, device=d.device).argsort(1)[:, : self.ways]
        noise = torch.rand(tasks, self.ways, d.per_class, generator=generator, device=d.device)
        examples = noise.argsort(2)[..., : self.shots + self.queries]
        return classes, examples

    def sample(self, tasks: int, generator: torch.Generator) -> Episode:
        """A batch of ``tasks`` episodes, images as float in [0, 1]."""
        classes, examples = self.sample_indices(tasks, generator)
        x = self.dataset.images[classes[..., None], examples]  # [tasks, ways, shots+queries, C, H, W]
        x = x.float().div_(255)
        w, s, q = self.ways, self.shots, self.queries
        labels = torch.arange(w, device=x.device)
        return Episode(
            support_x=x[:, :, :s].flatten(1, 2),
            support_y=labels.repeat_interleave(s).expand(tasks, -1),
            query_x=x[:, :, s:].flatten(1, 2),
            query_y=labels.repeat_interleave(q).expand(tasks, -1),
            classes=classes,
        )


def augment_images(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random horizontal flip, then a random crop after ``pad`` zero-padding (the CIFAR policy), per image, for
    ``x [..., C, H, W]`` float images; same shape out."""
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    x = x.reshape(-1, c, h, w)
    b = x.shape[0]
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    return out.reshape(*lead, c, h, w)


def augment_episode(episode: Episode, generator: torch.Generator, pad: int = 4) -> Episode:
    """The episode with :func:`augment_images` applied to every support and query image (training only)."""
    return replace(episode, support_x=augment_images(episode.support_x, generator, pad),
                   query_x=augment_images(episode.query_x, generator, pad))


# ----------------------------------------------------------------------------------------------
# Sinusoid regression (Finn et al. 2017, Sec. 5.1)
# ----------------------------------------------------------------------------------------------
@dataclass
class RegressionTasks:
    """``support_x/y`` ``[tasks, shots, 1]``, ``query_x/y`` ``[tasks, queries, 1]``; task parameters ``[tasks]``."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    amplitude: Tensor
    phase: Tensor


def sample_sinusoid(tasks: int, shots: int, queries: int, generator: torch.Generator,
                    amplitude: tuple[float, float] = (0.1, 5.0), phase: tuple[float, float] = (0.0, math.pi),
                    x_range: tuple[float, float] = (-5.0, 5.0)) -> RegressionTasks:
    """Tasks y = A sin(x - phi) with A ~ U[0.1, 5], phi ~ U[0, pi], x ~ U[-5, 5] (MAML's setup)."""
    _check_positive(tasks=tasks, shots=shots, queries=queries)
    dev = generator.device

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=dev)

    a, phi = uniform(*amplitude, tasks), uniform(*phase, tasks)
    x = uniform(*x_range, tasks, shots + queries, 1)
    y = a[:, None, None] * torch.sin(x - phi[:, None, None])
    return RegressionTasks(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], a, phi)
