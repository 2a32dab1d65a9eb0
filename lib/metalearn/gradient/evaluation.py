"""The one evaluator of the gradient-based methods (MAML, FOMAML, ANIL, Reptile): a meta-trained network adapted to
each test episode by its method's test-time rule (:class:`~metalearn.gradient.inner_loop.Adaptation`), and that one
adaptation scored several ways.

The adaptation θ → θ' reads only the support set, so it is the same whichever BatchNorm protocol later predicts the
queries and whichever queries are scored: it runs once per episode, and every row is read from it,

    Nichol et al.'s     the first query of each class, BatchNorm statistics of the support set plus that query
    Finn et al.'s       the first K (or the rule's ``test_queries``) queries of each class, statistics of their batch
    the shared row      all Q queries of each class of the study's shared test episodes, transductive

:class:`Adapted` adapts many episodes at once, by the fastest path measured: task-batched passes on a GPU
(:mod:`metalearn.gradient.batched`), the lean functional engine in worker processes on a CPU
(:mod:`metalearn.gradient.lean`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn.core.batchnorm import batch_statistics
from metalearn.core.episodes import ClassDataset, Episode, EpisodeSampler, make_generator
from metalearn.core.evaluate import PredictFn
from metalearn.gradient import lean
from metalearn.gradient.batched import batched_forward, supports
from metalearn.gradient.inner_loop import (
    BN_PROTOCOLS,
    Adaptation,
    LossFn,
    Params,
    adapt,
    adapt_minibatches,
    check_inner_loop,
    inner_names,
    query_outputs,
)
from metalearn.gradient.lean import View

NICHOL_QUERIES = 1  # Nichol et al.'s evaluation: one query per class, each its own forward pass with the support set
TASKS_PER_BATCH = 50  # test episodes drawn (and adapted) per batch: which episodes a seed draws depends on it


class Adapted(nn.Module):
    """A meta-trained network as a few-shot model under its test-time ``rule``: for each task, ``rule.steps`` SGD
    steps on its support set (BatchNorm with the statistics of each step's batch), then the query outputs
    ``[T, m, ...]`` of the adapted network under ``rule.protocol`` (or any protocol, :meth:`views`). Calling it
    never modifies the network.

    :meth:`views` takes the fastest of three paths that compute the same outputs (``tests/test_gradient_evaluation.py``
    and ``tests/test_batched_adaptation.py`` check them against the one-episode loop in float64), :meth:`path` says
    which:

        "batched"   on a GPU: ``chunk`` tasks at a time in one task-batched pass per layer
                    (:mod:`metalearn.gradient.batched`, each task with its own weights θ'_t; full-batch rules)
        "lean"      on a CPU: :mod:`metalearn.gradient.lean`, one task at a time through plain functional layers
                    (BatchNorm by ``F.batch_norm`` on batch statistics, channels-last convolutions), in single-thread
                    worker processes, one per core, where :func:`metalearn.gradient.lean.plan` says they pay
        "loop"      any other network: :meth:`views_per_task`, one task at a time through ``functional_call``

    On a 2-core CPU the lean path is 2-4x faster than the one-episode loop, and a grouped-convolution pass is not
    faster than the lean one (the measurements: :mod:`metalearn.gradient.lean`), so a CPU does not batch tasks.
    Nichol et al.'s minibatches (``rule.minibatch``) draw one order per task, in task order, from torch's global
    generator on every path but "batched", which they skip (so a GPU adapts them one task at a time, "loop").
    """

    def __init__(self, model: nn.Module, rule: Adaptation, *, loss_fn: LossFn = F.cross_entropy,
                 chunk: int = 50) -> None:
        super().__init__()
        self.names = check_inner_loop(model, rule.steps, rule.lr, inner_names(model, rule.inner))
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 task, got {chunk}")
        self.model, self.rule, self.loss_fn, self.chunk = model, rule, loss_fn, chunk
        self.functional = supports(model)  # every layer one that the batched and lean paths run
        self.batched = self.functional and rule.minibatch is None

    def path(self, support_x: Tensor) -> str:
        """The path :meth:`views` takes for these tasks: "batched", "lean" or "loop" (see the class docstring)."""
        if self.batched and support_x.device.type == "cuda":
            return "batched"
        return "lean" if self.functional and support_x.device.type == "cpu" else "loop"

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        """``support_x [T, n, ...]``, ``support_y [T, n]``, ``query_x [T, m, ...]`` -> outputs ``[T, m, ...]``
        under the rule's protocol (logits ``[T, m, ways]`` for a classifier whose head has ``ways`` outputs)."""
        out = self.views(support_x, support_y, query_x, [(self.rule.protocol, slice(None))])[0]
        if ways is not None and out.shape[-1] != ways:
            raise ValueError(f"the network has {out.shape[-1]} outputs but the episode is {ways}-way; "
                             f"build its head with {ways} outputs")
        return out

    def views(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, views: Sequence[View]) -> list[Tensor]:
        """One adaptation per task, scored several ways: for each ``(protocol, index)`` of ``views``, the outputs
        ``[T, m', ...]`` of the queries ``query_x[:, index]`` under that BatchNorm protocol (e.g. Nichol's on the
        first query of each class and the transductive one on all of them, from the same adapted weights)."""
        if any(p not in BN_PROTOCOLS for p, _ in views):
            raise ValueError(f"unknown BatchNorm protocol in {[p for p, _ in views]}; choose from {BN_PROTOCOLS}")
        path = self.path(support_x)
        if path == "batched":
            return self.views_batched(support_x, support_y, query_x, views)
        if path == "loop":
            return self.views_per_task(support_x, support_y, query_x, views)
        support_x, query_x = support_x.detach(), query_x.detach()  # inputs, not weights: no gradient crosses
        if lean.plan(self.model, support_x.shape[0], support_x.device) == "workers" and lean.can_send(self.loss_fn):
            with lean.Workers() as workers:
                return lean.adapted_views(self.model, self.rule, support_x, support_y, query_x, views,
                                          loss_fn=self.loss_fn, workers=workers)
        return lean.adapted_views(self.model, self.rule, support_x, support_y, query_x, views, loss_fn=self.loss_fn)

    def views_batched(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                      views: Sequence[View]) -> list[Tensor]:
        """:meth:`views` in task-batched passes, ``chunk`` tasks at a time."""
        if not self.batched:
            raise ValueError(f"the task-batched pass does not run {type(self.model).__name__} or minibatch "
                             "adaptation; use views_per_task")
        parts = [self._views_batched(support_x[lo:lo + self.chunk], support_y[lo:lo + self.chunk],
                                     query_x[lo:lo + self.chunk], views)
                 for lo in range(0, support_x.shape[0], self.chunk)]
        return [torch.cat([p[i] for p in parts]) for i in range(len(views))]

    def views_per_task(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                       views: Sequence[View]) -> list[Tensor]:
        """:meth:`views` one task at a time through ``functional_call`` (any network; the reference the faster paths
        are tested against)."""
        model, rule = self.model, self.rule
        outputs: list[list[Tensor]] = [[] for _ in views]
        for sx, sy, qx in zip(support_x, support_y, query_x, strict=True):
            params = {n: p.detach().requires_grad_(n in self.names) for n, p in model.named_parameters()}
            with batch_statistics(model):
                if rule.minibatch is None:
                    adapted = adapt(model, params, sx, sy, steps=rule.steps, inner_lr=rule.lr, first_order=True,
                                    names=self.names, loss_fn=self.loss_fn)
                else:
                    adapted = adapt_minibatches(model, params, sx, sy, steps=rule.steps, inner_lr=rule.lr,
                                                batch=rule.minibatch, names=self.names, loss_fn=self.loss_fn)
            with torch.no_grad():
                for out, (protocol, index) in zip(outputs, views, strict=True):
                    out.append(query_outputs(model, adapted, sx, qx[index], protocol))
        return [torch.stack(out) for out in outputs]

    def _views_batched(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                       views: Sequence[View]) -> list[Tensor]:
        """θ'_t of every task of the chunk in task-batched passes (BatchNorm: each task's own batch statistics;
        running statistics neither used nor moved), then each view's query outputs."""
        model, t = self.model, support_x.shape[0]
        params = {n: p.detach().expand(t, *p.shape) for n, p in model.named_parameters()}
        was_training = model.training
        model.train()  # batch statistics in every BatchNorm (update_stats=False: the running ones stay)
        try:
            for _ in range(self.rule.steps):
                adapted = {n: params[n].clone().requires_grad_() for n in self.names}
                with torch.enable_grad():
                    out = batched_forward(model, {**params, **adapted}, support_x, update_stats=False)
                    # Σ_t L_t: each task's mean loss, summed, so each task's gradient is its own
                    loss = self.loss_fn(out.flatten(0, 1), support_y.flatten(0, 1)) * t
                    grads = torch.autograd.grad(loss, [adapted[n] for n in self.names])
                params = {**params, **{n: (adapted[n] - self.rule.lr * g).detach()
                                       for n, g in zip(self.names, grads, strict=True)}}
            with torch.no_grad():
                return [self._query_batched(params, support_x, query_x[:, index], p) for p, index in views]
        finally:
            model.train(was_training)

    def _query_batched(self, params: Params, support_x: Tensor, query_x: Tensor, protocol: str,
                       images: int = 4096) -> Tensor:
        """The query outputs ``[T, m, ...]`` of the adapted weights ``params`` ``[T, ...]`` under ``protocol``
        (:func:`~metalearn.gradient.inner_loop.query_outputs` for every task at once; Nichol's protocol as T·m groups
        of support + one query, at most ``images`` images per pass)."""
        if protocol == "transductive":
            return batched_forward(self.model, params, query_x, update_stats=False)
        t, m, n = query_x.shape[0], query_x.shape[1], support_x.shape[1]
        x = torch.cat([support_x[:, None].expand(t, m, *support_x.shape[1:]), query_x[:, :, None]], 2)
        x = x.flatten(0, 1)  # [T·m groups, n + 1, ...]: one group per query, with its task's support set
        group_params = {k: v.repeat_interleave(m, 0) for k, v in params.items()}
        per = max(1, images // (n + 1))
        out = [batched_forward(self.model, {k: v[lo:lo + per] for k, v in group_params.items()}, x[lo:lo + per],
                               update_stats=False)[:, -1] for lo in range(0, x.shape[0], per)]
        return torch.cat(out).unflatten(0, (t, m))


def adapted_predictor(rule: Adaptation) -> Callable[[nn.Module], PredictFn]:
    """The test-time rule of a meta-trained network as a function of the network (what a
    :class:`~metalearn.core.evaluate.Validation` scores at each check): :class:`Adapted` under ``rule``, predicting
    each query's class (Nichol's minibatch orders come from torch's global generator seeded afresh at every call, so a
    check's score does not depend on the run's history). Its name records the rule, so a trained
    model's key changes with it."""

    def predict(model: nn.Module) -> PredictFn:
        learner, calls = Adapted(model, rule), itertools.count()

        def classes(ep: Episode) -> Tensor:
            if rule.minibatch is None:
                return learner(ep.support_x, ep.support_y, ep.query_x).argmax(-1)
            with torch.random.fork_rng(devices=[ep.support_x.device] if ep.support_x.is_cuda else []):
                torch.manual_seed(next(calls))  # the i-th batch of a check's episodes: the same orders at every check
                return learner(ep.support_x, ep.support_y, ep.query_x).argmax(-1)

        return classes

    predict.__qualname__ = f"adapted_predictor({rule!r})"
    return predict


def protocol_queries(protocol: str, shots: int, test_queries: int | None) -> int:
    """Query examples per class of a test or validation episode scored under a BatchNorm ``protocol``: one under
    ``"nichol"`` (Nichol et al.'s evaluation; each query costs a forward pass of the whole support set), else
    ``test_queries`` (K, the shots, if None: Finn et al.'s Omniglot code)."""
    return NICHOL_QUERIES if protocol == "nichol" else (test_queries or shots)


def first_queries(ways: int, queries: int, q: int, device: torch.device | str = "cpu") -> Tensor:
    """The indices of the first ``q`` queries of each class in an episode of ``queries`` queries per class (the
    query set is ordered class by class): ``[ways * q]``."""
    return (torch.arange(ways, device=device)[:, None] * queries + torch.arange(q, device=device)).flatten()


def score_views(learner: Adapted, sampler: EpisodeSampler, views: Mapping[str, tuple[str, int]], *, episodes: int,
                seed: int, tasks_per_batch: int = TASKS_PER_BATCH) -> dict[str, np.ndarray]:
    """Each episode's accuracy (%) in every view ``{row: (protocol, q)}``: the first q queries of each class of
    ``episodes`` seeded episodes of ``sampler``, scored under the protocol after one adaptation per episode. The
    episodes come from ``make_generator(seed)``; Nichol's minibatch orders from torch's global generator seeded with
    ``seed`` (inside, so the caller's generator state is unchanged), episode by episode."""
    if episodes < 2 or tasks_per_batch < 1:
        raise ValueError(f"need episodes >= 2 (an interval) and tasks_per_batch >= 1, got {episodes} and "
                         f"{tasks_per_batch}")
    dev, ways, queries = sampler.dataset.device, sampler.ways, sampler.queries
    if any(q > queries for _, q in views.values()):
        raise ValueError(f"views {dict(views)} score more queries per class than the episodes' {queries}")
    index = {name: first_queries(ways, queries, q, dev) for name, (_, q) in views.items()}
    g = make_generator(seed, dev)
    accs: dict[str, list[Tensor]] = {name: [] for name in views}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for lo in range(0, episodes, tasks_per_batch):
            ep = sampler.sample(min(tasks_per_batch, episodes - lo), g)
            outs = learner.views(ep.support_x, ep.support_y, ep.query_x,
                                 [(p, index[n]) for n, (p, _) in views.items()])
            for name, out in zip(views, outs, strict=True):
                accs[name].append((out.argmax(-1) == ep.query_y[:, index[name]]).double().mean(1) * 100)
    return {name: torch.cat(values).cpu().numpy() for name, values in accs.items()}


def evaluate(model: nn.Module, rule: Adaptation, test_set: ClassDataset, ways: int, shots: int, *,
             test_queries: int | None, shared_queries: int | None, episodes: int, seed: int,
             tasks_per_batch: int = TASKS_PER_BATCH) -> dict[str, np.ndarray]:
    """Every row of one model in one setting, from one adaptation per episode under ``rule``: each episode's
    accuracy (%) by row suffix,

        ``""``                         Nichol et al.'s protocol on the first query of each class
        ``"_transductive"``            Finn et al.'s: the first :func:`protocol_queries` queries of each class
                                       (``test_queries``, K if None), transductive
        ``f"_transductive_{Q}q"``      with ``shared_queries`` = Q: all Q queries of each class, transductive (the
                                       study's shared test episodes)

    The episodes are ``ways``-way ``shots``-shot episodes of ``test_set``. The rows read one pass over the shared
    episodes (Q queries per class) where they need at most Q, else episodes of their own query count."""
    own = protocol_queries("transductive", shots, test_queries)
    main = shared_queries if shared_queries is not None and own <= shared_queries else own
    passes: dict[int, dict[str, tuple[str, int]]] = {main: {"": ("nichol", NICHOL_QUERIES),
                                                            "_transductive": ("transductive", own)}}
    if shared_queries is not None:
        passes.setdefault(shared_queries, {})[f"_transductive_{shared_queries}q"] = ("transductive", shared_queries)
    learner = Adapted(model, rule)
    out: dict[str, np.ndarray] = {}
    for queries, views in passes.items():
        out |= score_views(learner, EpisodeSampler(test_set, ways, shots, queries), views, episodes=episodes, seed=seed,
                           tasks_per_batch=tasks_per_batch)
    return out
