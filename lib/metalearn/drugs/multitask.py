"""Multitask pre-training, then fine-tuning on a new task: the baseline every meta-initialisation is measured against
(Nguyen et al. 2020; the FS-Mol "GNN-MT" baseline), here on molecular fingerprints.

Pre-training: one body f_θ shared by all training assays and one logistic head (w_t, b_t) per assay t, trained on
every labelled (molecule, assay) pair with binary cross-entropy,

    min_{θ, w, b}  Σ_{(x, t, y)} BCE(σ(w_tᵀ f_θ(x) + b_t), y)

Fine-tuning on a new assay's support set S: a fresh head (w, b) = 0, then ``steps`` Adam steps on S of either the head
alone (logistic regression on the frozen features: "top layer") or body and head together ("all layers"). Several
support draws of one task are fine-tuned at once, each with its own copy of the weights, with the layers run once
for all copies (``torch.func.vmap`` over the copies): Adam is element-wise, so this equals fine-tuning each draw on
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metalearn.core.train import RunOptions, Schedule, TrainResult, adam, train
from metalearn.datasets.molecules import MoleculeTasks

FINETUNE_LAYERS = ("all", "head")


def fingerprint_body(sizes: tuple[int, ...] = (2048, 1024, 512)) -> nn.Sequential:
    """The study's molecular backbone: Linear + ReLU layers of ``sizes`` (fingerprint -> features), with
    ``feature_dim`` (the last size) as the metric methods expect."""
    if len(sizes) < 2:
        raise ValueError(f"a body needs input and output sizes, got {sizes}")
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    body = nn.Sequential(*layers)
    body.feature_dim = sizes[-1]  # type: ignore[assignment]  # torch's stub: setattr of tensors and modules only
    return body


class MultitaskNet(nn.Module):
    """A shared body and one logistic head per training task: ``(x [B, F], task [B]) -> logits [B]``."""

    def __init__(self, body: nn.Module, tasks: int) -> None:
        super().__init__()
        self.body, self.tasks = body, tasks
        self.head_weight = nn.Parameter(torch.zeros(tasks, cast(int, body.feature_dim)))
        self.head_bias = nn.Parameter(torch.zeros(tasks))

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        z = self.body(x)
        return (z * self.head_weight[task]).sum(-1) + self.head_bias[task]


class LabelledPairs:
    """Batches of ``batch`` labelled (molecule, task) pairs drawn uniformly from all of ``data``'s rows:
    ``sample(generator) -> (x [B, 2048], task [B], y [B])``."""

    def __init__(self, data: MoleculeTasks, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._data = data
        self._task = torch.repeat_interleave(torch.arange(len(data), device=data.label.device), data.sizes)
        self.name, self.batch, self.tasks, self.rows, self.digest = data.name, batch, len(data), len(data.label), \
            data.digest

    def sample(self, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        rows = torch.randint(self.rows, (self.batch,), generator=generator, device=generator.device)
        rows = rows.to(self._data.label.device)
        return self._data.features(self._data.molecule[rows]), self._task[rows], self._data.label[rows]


def train_multitask(model: MultitaskNet, data: LabelledPairs, steps: int, settings: Schedule,
                    run: RunOptions) -> TrainResult:
    """Adam (``settings``) on ``steps`` batches of labelled pairs, binary cross-entropy (see the module
    docstring)."""
    if data.tasks != model.tasks:
        raise ValueError(f"the model has {model.tasks} task heads but the data {data.tasks} tasks")
    opt, scheduler = adam(model, steps, settings)

    def step_loss(m: MultitaskNet, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x, task, y = batch
        logits = m(x, task)
        acc = ((logits > 0).long() == y).float().mean().item() * 100
        return F.binary_cross_entropy_with_logits(logits, y.float()), {"accuracy": acc}

    return train(model, step_loss, lambda step, g: data.sample(g), steps, opt, run, scheduler, examples=data.batch)


class FineTuned:
    """Fine-tuning as a few-shot scorer: ``FineTuned(steps, lr, layers)(body)`` (or of a :class:`MultitaskNet`: its
    body) maps support draws
    ``support_x [D, n, F]``, ``support_y [D, n]`` and their queries ``query_x [D, m, F]`` to P(active) ``[D, m]``,
    after ``steps`` Adam steps (step size ``lr``, full support batch) of a fresh zero head and, with
    ``layers="all"``, of a copy of ``body`` per draw. ``body`` is never modified."""

    def __init__(self, steps: int, lr: float, layers: str = "all") -> None:
        if layers not in FINETUNE_LAYERS:
            raise ValueError(f"layers must be one of {FINETUNE_LAYERS}, got {layers!r}")
        if steps < 0 or not lr > 0:
            raise ValueError(f"need steps >= 0 and lr > 0, got {steps}, {lr}")
        self.steps, self.lr, self.layers = steps, lr, layers

    def __repr__(self) -> str:
        return f"FineTuned(steps={self.steps}, lr={self.lr}, layers={self.layers!r})"

    def __call__(self, model: nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        body = model.body if isinstance(model, MultitaskNet) else model
        per_draw = vmap(lambda p, x: functional_call(body, p, (x,)))  # copies [D, ...], inputs [D, n, F] -> [D, n, H]

        def score(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
            d, dim = support_x.shape[0], cast(int, body.feature_dim)
            with torch.enable_grad():
                like: dict[str, Any] = dict(device=support_x.device, dtype=support_x.dtype, requires_grad=True)
                head = [torch.zeros(d, dim, 1, **like), torch.zeros(d, 1, 1, **like)]
                params: dict[str, Tensor] = {}
                if self.layers == "all":
                    params = {n: p.detach().expand(d, *p.shape).clone().requires_grad_(True)
                              for n, p in body.named_parameters()}
                else:
                    with torch.no_grad():
                        frozen = body(support_x)

                def features(x: Tensor) -> Tensor:
                    return per_draw(params, x) if params else frozen

                trained = [*params.values(), *head]
                opt = torch.optim.Adam(trained, lr=self.lr)
                y = support_y.to(support_x.dtype)
                for _ in range(self.steps):
                    logits = torch.baddbmm(head[1], features(support_x), head[0]).squeeze(-1)  # [D, n]
                    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                z = per_draw(params, query_x) if params else body(query_x)
                return torch.sigmoid(torch.baddbmm(head[1], z, head[0]).squeeze(-1))

        return score
