"""Few-shot molecular property prediction: every method as a scorer, the test protocols, and their metrics.

A **scorer** maps support draws of one task to the probability that each query molecule is active:

    scorer(support_x [D, n, 2048], support_y [D, n], query_x [D, m, 2048]) -> P(active) [D, m]

(D draws of the same task at once). Each method gives one from its trained model: a meta-initialisation fine-tuned by
its inner loop (:class:`AdaptedScorer`: MAML, first-order MAML, ANIL), ProtoNet's nearest prototype
(:class:`PrototypeScorer`), multitask fine-tuning (:class:`metalearn.drugs.multitask.FineTuned`), k nearest neighbours in a
learned embedding (:class:`NearestNeighbours`), or a random forest on the support set alone (:class:`RandomForest`).
Where the network's body stays fixed at test time (ProtoNet, k-NN, ANIL) the scorer is a :class:`FrozenBody`: it
scores embeddings, and :func:`evaluate_tasks` embeds each task's molecules once for all its support sizes and draws.

The test protocol (:func:`evaluate_tasks`): for each test task and support size k, ``draws`` support draws
(:func:`metalearn.datasets.molecules.draw_support`, seeded by task, k and draw, so every method sees the very same supports),
the rest of the task as the query, and per draw

    AUPRC  = average precision of the scores on the query            (sklearn's ``average_precision_score``)
    ΔAUPRC = AUPRC − (fraction of actives in the query)               (FS-Mol's metric: 0 = a random ranking)
    ROC-AUC                                                            (the MoleculeNet benchmark's metric)

A task is skipped at a size where the draw would leave fewer than 2 query molecules or a label without a support
or query molecule (FS-Mol's rule; at k = 256 only 43 of FS-Mol's 157 test tasks remain).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor, nn

from metalearn.core.episodes import make_generator
from metalearn.core.evaluate import PairedDifference, mean_ci95
from metalearn.core.prototypes import prototype_logits
from metalearn.datasets.fetch import RemoteFile, default_data_dir, default_mirror, fetch
from metalearn.datasets.molecules import MoleculeTasks, can_draw, draw_support
from metalearn.gradient.evaluation import Adapted
from metalearn.gradient.inner_loop import Adaptation

Scorer = Callable[[Tensor, Tensor, Tensor], Tensor]
METRICS = ("delta_auprc", "auprc", "roc_auc")


def _probability_of_active(logits: Tensor) -> Tensor:
    """P(active) from 2-way logits ``[..., 2]`` (label 1 = active)."""
    return logits.softmax(-1)[..., 1]


class FrozenBody:
    """A scorer whose network body is not adapted at test time: ``score(embed(sx), sy, embed(qx))``, with
    ``embed: [..., 2048] -> [..., d]`` and ``score`` a scorer on embeddings ``[D, n, d]``. Called on fingerprints it
    is an ordinary scorer; :func:`evaluate_tasks` instead embeds a task's molecules once and indexes them, since a
    query's embedding does not depend on the draw (the body has no BatchNorm)."""

    def __init__(self, embed: Callable[[Tensor], Tensor], score: Scorer) -> None:
        self.embed, self.score = embed, score

    def __call__(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        return self.score(self.embed(support_x), support_y, self.embed(query_x))


class AdaptedScorer:
    """A meta-initialisation at test time under its method's ``rule``
    (:class:`~metalearn.gradient.inner_loop.Adaptation`): ``rule.steps`` SGD steps of step size ``rule.lr`` on each
    draw's support, of every parameter (``inner="all"``) or of the last linear layer (``"head"``, ANIL), then
    P(active) of the queries. The networks here have no BatchNorm, so each query's prediction depends on the support
    set alone, whatever the rule's protocol."""

    def __init__(self, rule: Adaptation) -> None:
        if rule.inner not in ("all", "head"):
            raise ValueError(f"the molecule networks have no BatchNorm: adapt inner='all' or 'head', got {rule.inner!r}")
        self.rule = rule

    def __repr__(self) -> str:
        return f"AdaptedScorer({self.rule!r})"

    def __call__(self, model: nn.Module) -> Scorer:
        if self.rule.inner == "head" and isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
            # ANIL on body + linear head: the same inner loop on the head alone, fed the body's fixed embeddings
            head = Adapted(model[-1], replace(self.rule, inner="all"))
            return FrozenBody(model[:-1], lambda sz, sy, qz: _probability_of_active(head(sz, sy, qz)))
        learner = Adapted(model, self.rule)
        return lambda sx, sy, qx: _probability_of_active(learner(sx, sy, qx))


class PrototypeScorer:
    """ProtoNet at test time: P(active) = softmax over the two prototypes' −‖f(x) − c_k‖²."""

    def __repr__(self) -> str:
        return "PrototypeScorer()"

    def __call__(self, model: nn.Module) -> Scorer:
        return FrozenBody(cast(nn.Module, model.backbone),
                          lambda sz, sy, qz: _probability_of_active(prototype_logits(sz, sy, qz, 2)))


class NearestNeighbours:
    """k nearest support molecules in the embedding ``body(x)`` (Euclidean), voting with weights 1/distance:
    score = Σ_j w_j y_j / Σ_j w_j over the k = min(``k``, n) nearest."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __repr__(self) -> str:
        return f"NearestNeighbours(k={self.k})"

    def __call__(self, body: nn.Module) -> Scorer:
        def score(sz: Tensor, sy: Tensor, qz: Tensor) -> Tensor:
            distance = torch.cdist(qz, sz)  # [D, m, n]
            d, nearest = distance.topk(min(self.k, sz.shape[1]), dim=-1, largest=False)
            w = 1.0 / (d + 1e-6)
            return (w * sy.float().gather(1, nearest.flatten(1)).view_as(w)).sum(-1) / w.sum(-1)

        return FrozenBody(body, score)


class RandomForest:
    """A random forest trained on each draw's support fingerprints alone (scikit-learn): P(active) is the trees'
    mean vote. ``model`` is ignored (a single-task baseline)."""

    def __init__(self, trees: int = 100, max_features: str | float = "sqrt", min_samples_leaf: int = 1,
                 seed: int = 0, jobs: int = 2) -> None:
        self.trees, self.max_features, self.min_samples_leaf, self.seed, self.jobs = (
            trees, max_features, min_samples_leaf, seed, jobs)

    def __repr__(self) -> str:
        return (f"RandomForest(trees={self.trees}, max_features={self.max_features!r}, "
                f"min_samples_leaf={self.min_samples_leaf}, seed={self.seed})")

    def __call__(self, model: nn.Module | None = None) -> Scorer:
        from sklearn.ensemble import RandomForestClassifier

        def score(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
            out = []
            for x, y, q in zip(sx.cpu().numpy(), sy.cpu().numpy(), qx.cpu().numpy(), strict=True):
                forest = RandomForestClassifier(self.trees, max_features=self.max_features,
                                                min_samples_leaf=self.min_samples_leaf, random_state=self.seed,
                                                n_jobs=self.jobs).fit(x, y)
                out.append(torch.from_numpy(forest.predict_proba(q)[:, list(forest.classes_).index(1)]))
            return torch.stack(out).float().to(qx.device)

        return score


def draw_seed(seed: int, task: str, size: int, draw: int) -> int:
    """The seed of one support draw: the same for every method, independent across tasks, sizes and draws."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}:{size}:{draw}".encode()).digest()[:7], "little")


def task_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUPRC, ΔAUPRC and ROC-AUC (both in [0, 1]) of ``scores [m]`` for binary ``labels [m]``."""
    auprc = float(average_precision_score(labels, scores))
    return {"auprc": auprc, "delta_auprc": auprc - float(labels.mean()), "roc_auc": float(roc_auc_score(labels, scores))}


@torch.no_grad()
def evaluate_tasks(scorer: Scorer, data: MoleculeTasks, sizes: tuple[int, ...], *, protocol: str = "stratified",
                   draws: int = 10, seed: int = 0, tasks: list[int] | None = None,
                   embed_chunk: int = 4096) -> pd.DataFrame:
    """Score ``scorer`` on ``data``'s tasks (all, or the indices ``tasks``): one row per (task, size, draw) with
    ``task, size, draw, queries, active_fraction, auprc, delta_auprc, roc_auc`` (see the module docstring). A
    :class:`FrozenBody` scorer gets embeddings of each task's molecules, computed once, ``embed_chunk`` at a time."""
    if draws < 1 or not sizes or embed_chunk < 1:
        raise ValueError(f"need draws >= 1, at least one support size and embed_chunk >= 1, got {draws}, {sizes}, "
                         f"{embed_chunk}")
    frozen = isinstance(scorer, FrozenBody)
    rows = []
    for t in range(len(data)) if tasks is None else tasks:
        mol, y = data.task(t)
        name = data.task_names[t]
        embedded = None  # [n, d]: the task's molecules through a frozen body, once for every size and draw
        for k in sizes:
            if not can_draw(len(y), int(y.sum()), k, protocol, min_query=2):
                continue
            picks = [draw_support(y, k, protocol, make_generator(draw_seed(seed, name, k, d), y.device))
                     for d in range(draws)]
            support, query = (torch.stack(p) for p in zip(*picks, strict=True))
            if frozen and embedded is None:
                embedded = torch.cat([cast(FrozenBody, scorer).embed(data.features(mol[i:i + embed_chunk]))
                                      for i in range(0, len(mol), embed_chunk)])
            with torch.enable_grad():  # a scorer may fine-tune on the support set
                if frozen:
                    assert embedded is not None
                    scores = cast(FrozenBody, scorer).score(embedded[support], y[support], embedded[query])
                else:
                    scores = scorer(data.features(mol[support]), y[support], data.features(mol[query]))
            for d, (s, labels) in enumerate(zip(scores.cpu().numpy(), y[query].cpu().numpy(), strict=True)):
                rows.append({"task": name, "size": k, "draw": d, "queries": len(labels),
                             "active_fraction": float(labels.mean()), **task_metrics(s, labels)})
    return pd.DataFrame(rows)


def per_task(table: pd.DataFrame, metric: str = "delta_auprc") -> pd.DataFrame:
    """The mean over draws of ``metric`` for each (size, task): a ``[sizes x tasks]`` table (NaN where skipped)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    return table.groupby(["size", "task"])[metric].mean().unstack("task")


def summary(table: pd.DataFrame, metric: str = "delta_auprc") -> pd.DataFrame:
    """Per support size: the mean over tasks of the per-task mean ``metric``, its 95% CI over tasks, and the
    number of tasks."""
    out = []
    for size, values in per_task(table, metric).iterrows():
        v = values.dropna().to_numpy()
        mean, ci = mean_ci95(v) if len(v) > 1 else (float(v.mean()), float("nan"))
        out.append({"size": size, "mean": mean, "ci95": ci, "tasks": len(v)})
    return pd.DataFrame(out).set_index("size")


def paired_tasks(a: pd.DataFrame, b: pd.DataFrame, metric: str = "delta_auprc") -> dict[int, PairedDifference]:
    """Per support size, A − B over the tasks both were scored on (the same draws): the mean of the per-task
    differences and its 95% CI."""
    pa, pb = per_task(a, metric), per_task(b, metric)
    out = {}
    for size in pa.index.intersection(pb.index):
        diff = (pa.loc[size] - pb.loc[size]).dropna().to_numpy()
        if len(diff) > 1:
            out[int(size)] = PairedDifference(*mean_ci95(diff), len(diff))
    return out


def task_differences(a: Mapping[int, pd.DataFrame], b: Mapping[int, pd.DataFrame], metric: str = "delta_auprc",
                     ) -> dict[int, np.ndarray]:
    """Per support size, A − B per task (each task's mean over its draws) for each training seed, seed s's table
    against seed s's: ``[seeds, tasks]`` (seeds in sorted order) over the tasks both score at every seed (the same
    draws); sizes with fewer than two such tasks are left out."""
    if not a or set(a) != set(b):
        raise ValueError(f"pairing by seed needs the same training seeds on both sides, got {sorted(a)} and "
                         f"{sorted(b)}")
    diffs = {s: per_task(a[s], metric) - per_task(b[s], metric) for s in sorted(a)}
    out = {}
    for size in sorted(set.intersection(*(set(d.index) for d in diffs.values()))):
        rows = [d.loc[size] for d in diffs.values()]
        tasks = sorted(set.intersection(*(set(r.dropna().index) for r in rows)))
        if len(tasks) > 1:
            out[int(size)] = np.stack([r[tasks].to_numpy(float) for r in rows])
    return out


def wins(a: pd.DataFrame, b: pd.DataFrame, metric: str = "delta_auprc") -> pd.DataFrame:
    """Per support size, on how many tasks A matches or beats B (per-task mean ``metric``, A ≥ B) out of how many:
    Nguyen et al.'s question."""
    pa, pb = per_task(a, metric), per_task(b, metric)
    rows = []
    for size in pa.index.intersection(pb.index):
        both = (pa.loc[size] - pb.loc[size]).dropna()
        rows.append({"size": int(size), "wins": int((both >= 0).sum()), "tasks": len(both)})
    return pd.DataFrame(rows).set_index("size")


@dataclass(frozen=True)
class AssayValidation:
    """Model selection on validation tasks: the mean ``metric`` (× 100) of ``predict(model)`` over ``data``'s tasks
    at ``sizes``, ``draws`` fixed draws each (seed ``seed``), scored every ``every`` training steps."""

    data: MoleculeTasks
    predict: Callable[[nn.Module], Scorer]
    sizes: tuple[int, ...] = (16,)
    draws: int = 3
    every: int = 100
    seed: int = 1
    protocol: str = "stratified"
    metric: str = "delta_auprc"

    def __call__(self, model: nn.Module) -> float:
        table = evaluate_tasks(self.predict(model), self.data, self.sizes, protocol=self.protocol, draws=self.draws,
                               seed=self.seed)
        return float(per_task(table, self.metric).mean(axis=1).mean() * 100)

    def describe(self) -> dict[str, Any]:
        """What a trained model's key records of its selection."""
        return {"data": self.data.name, "contents": self.data.digest, "sizes": list(self.sizes),
                "draws": self.draws, "every": self.every, "seed": self.seed, "protocol": self.protocol,
                "metric": self.metric, "predict": repr(self.predict)}


# The FS-Mol authors' per-task results (microsoft/FS-Mol baselines/, MIT): AUPRC mean+/-std over their draws per
# test task and support size, with the query's active fraction.
_FSMOL_COMMIT = "92aa95daba3f43863227e65be85a07b4a2ee754f"
FSMOL_BASELINES = {
    "protonet": ("ProtoNet-gnn+ecfp+fc-Support64", "9d2506e2b9da01ac14d4e5e9653ce99bb92deb7d631e0eb9851f8305fe9a358f"),
    "maml": ("MAML-Support16", "05c52c91411b5754adb4cc5caf88719daafbf9ed72883c75d7b9d4ebb4eb3dd5"),
    "multitask": ("GNN-Multitask", "503a041e3ecd99166fab59d13f15fe624fdd03e3bd6a60577f18683f5a453841"),
    "random_forest": ("random_forest", "3e66a832bae355649177d30e2ecb1b099cae8a9fb55e709b5e9624a001ac587f"),
    "knn": ("kNN", "6b37b79e29ecf9e302eac6f33db5d02815964fd5064bb8292331962122ad80f4"),
    "single_task_gnn": ("GNN-ST", "131d9f67e2032d3ebd2dd7957365f9d3b29ba8d86823e01f20a3b3b8e7f7ec55"),
}


def fsmol_baselines(data_dir: Path | None = None, mirror: str | None = None) -> pd.DataFrame:
    """The FS-Mol authors' results, one row per (method, task, size): ``method, task, size, auprc, delta_auprc``
    (ΔAUPRC = their mean AUPRC minus the task's query active fraction), fetched from the mirror or GitHub."""
    raw = (Path(data_dir) if data_dir else default_data_dir()) / "raw"
    mirror = mirror if mirror is not None else default_mirror()
    rows = []
    for method, (name, sha) in FSMOL_BASELINES.items():
        remote = RemoteFile(f"molecules/fsmol/baselines/{name}_summary.csv",
                            f"https://raw.githubusercontent.com/microsoft/FS-Mol/{_FSMOL_COMMIT}/baselines/"
                            f"{name}_summary.csv", sha)
        table = pd.read_csv(fetch(remote, raw, mirror))
        for size in (16, 32, 64, 128, 256):
            cells = table[["TASK_ID", "fraction_positive_test", f"{size}_train"]].dropna()
            auprc = cells[f"{size}_train"].str.split("+/-", regex=False).str[0].astype(float)
            rows += [{"method": method, "task": t, "size": size, "auprc": a, "delta_auprc": a - p}
                     for t, p, a in zip(cells["TASK_ID"], cells["fraction_positive_test"], auprc, strict=True)]
    return pd.DataFrame(rows)
