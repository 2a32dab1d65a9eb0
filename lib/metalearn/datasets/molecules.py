"""Few-shot molecular property prediction: assays as tasks, support draws, and episodes of fingerprints.

Each assay (an FS-Mol ChEMBL assay, a Tox21 or ToxCast end point, a SIDER organ class, a MUV target) is a binary
task: the molecules measured in it, each labelled active (1) or inactive (0). A few-shot task gives a *support*
set of labelled molecules of a new assay and asks for the rest, the *query*. Two protocols draw the support:

    "stratified"  k molecules with the task's own active fraction, k ∈ {16, 32, 64, 128, 256} (FS-Mol: the
                  support keeps round(k p) actives, p = the task's active fraction, at least one of each label)
    "balanced"    k actives + k inactives (the MoleculeNet few-shot benchmark of Meta-MGNN and PAR: k = 10)

and the query is the rest of the task. A molecule is its ECFP x ∈ {0, 1}^2048 (:mod:`metalearn.datasets.fingerprints`);
molecules RDKit cannot parse are skipped, and counted, the same for every method.

Meta-training episodes use the shared :class:`~metalearn.core.episodes.Episode` (2-way: label 0 inactive, 1 active):
``support_x [tasks, n, 2048]``, ``support_y [tasks, n]``, ``query_x [tasks, m, 2048]``, ``query_y [tasks, m]``,
``classes [tasks, 2]`` (the assay's index, twice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor

from metalearn.core.episodes import Episode, resolve_device
from metalearn.datasets.fetch import FEWSHOT_TASK_COUNTS, load_molecules
from metalearn.datasets.fingerprints import distinct_smiles, load_fingerprints, morgan_fingerprints

PROTOCOLS = ("stratified", "balanced")
_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # np.packbits order: the first bit is the highest


def unpack_bits(bits: Tensor) -> Tensor:
    """Packed fingerprints uint8 ``[..., B/8]`` -> float 0/1 ``[..., B]``."""
    return ((bits[..., None] >> _SHIFTS.to(bits.device)) & 1).flatten(-2).float()


@dataclass
class MoleculeTasks:
    """Binary tasks over one set of molecules: task ``t`` holds the rows ``offsets[t]:offsets[t+1]`` of
    ``molecule`` (index into ``bits``) and ``label`` (0/1). ``skipped[task]``: its rows dropped because RDKit could
    not parse the SMILES."""

    name: str
    task_names: list[str]
    bits: Tensor  # uint8 [molecules, 256]
    offsets: Tensor  # int64 [tasks + 1]
    molecule: Tensor  # int64 [rows]
    label: Tensor  # int64 [rows]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.task_names)

    def task(self, t: int) -> tuple[Tensor, Tensor]:
        """Task ``t``'s molecules ``[n]`` (indices into ``bits``) and labels ``[n]``."""
        lo, hi = int(self.offsets[t]), int(self.offsets[t + 1])
        return self.molecule[lo:hi], self.label[lo:hi]

    def features(self, molecules: Tensor) -> Tensor:
        """Fingerprints of ``molecules [...]`` as float ``[..., 2048]``."""
        return unpack_bits(self.bits[molecules])

    @property
    def sizes(self) -> Tensor:
        return self.offsets.diff()

    @property
    def actives(self) -> Tensor:
        """Active molecules per task ``[tasks]``."""
        return torch.zeros(len(self), dtype=torch.int64, device=self.label.device).index_add_(
            0, torch.repeat_interleave(torch.arange(len(self), device=self.label.device), self.sizes), self.label)

    @property
    def digest(self) -> str:
        """A hash of the tasks' contents (names, molecules' fingerprints, labels): what a trained model's key
        records of its data."""
        h = hashlib.sha256(" ".join(self.task_names).encode())
        for t in (self.offsets, self.label, self.bits[self.molecule]):
            h.update(t.cpu().numpy().tobytes())
        return h.hexdigest()

    def to(self, device: str | torch.device) -> MoleculeTasks:
        d = resolve_device(device)
        return MoleculeTasks(self.name, self.task_names, self.bits.to(d), self.offsets.to(d), self.molecule.to(d),
                             self.label.to(d), self.skipped)


def _from_rows(name: str, tasks: list[str], task_of_row: np.ndarray, smiles_of_row: np.ndarray,
               label_of_row: np.ndarray, smiles: np.ndarray, bits: np.ndarray, parsed: np.ndarray) -> MoleculeTasks:
    """Tasks from long-format rows (task, SMILES, label), unparsable molecules skipped and counted."""
    index = {s: i for i, s in enumerate(smiles)}
    mol = np.array([index[s] for s in smiles_of_row], dtype=np.int64)
    keep = parsed[mol]
    order = {t: i for i, t in enumerate(tasks)}
    tid = np.array([order[t] for t in task_of_row], dtype=np.int64)
    skipped = {tasks[t]: int(c) for t, c in zip(*np.unique(tid[~keep], return_counts=True), strict=True)}
    tid, mol, lab = tid[keep], mol[keep], label_of_row[keep].astype(np.int64)
    sort = np.argsort(tid, kind="stable")
    offsets = np.zeros(len(tasks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(tid, minlength=len(tasks)))
    return MoleculeTasks(name, list(tasks), torch.from_numpy(bits), torch.from_numpy(offsets),
                         torch.from_numpy(mol[sort]), torch.from_numpy(lab[sort]), skipped)


def load_fsmol(fold: str, data_dir: Path | None = None, device: str | torch.device = "cpu",
               max_tasks: int | None = None) -> MoleculeTasks:
    """FS-Mol's ``fold`` (train, valid, test): one task per assay, in assay-id order; with ``max_tasks``, only the
    first ``max_tasks`` of them (fingerprinted on the spot, not cached)."""
    if fold not in ("train", "valid", "test"):
        raise ValueError(f"unknown FS-Mol fold {fold!r}; choose from train, valid, test")
    if max_tasks is not None and max_tasks < 1:
        raise ValueError(f"max_tasks must be >= 1 or None (all), got {max_tasks}")
    table = load_molecules(f"fsmol_{fold}", data_dir)
    tasks = sorted(table["assay_id"].unique())
    if max_tasks is not None and max_tasks < len(tasks):
        tasks = tasks[:max_tasks]
        table = table[table["assay_id"].isin(tasks)]
        smiles = distinct_smiles(table)
        bits, parsed = morgan_fingerprints(smiles)
    else:
        smiles = distinct_smiles(table)
        bits, parsed = load_fingerprints(f"fsmol_{fold}", smiles, data_dir)
    name = f"fsmol/{fold}" + (f"[:{len(tasks)}]" if max_tasks is not None else "")
    return _from_rows(name, tasks, table["assay_id"].to_numpy(), table["smiles"].to_numpy(),
                      table["label"].to_numpy(), smiles, bits, parsed).to(device)


def fsmol_assay_types(fold: str, data_dir: Path | None = None) -> dict[str, str]:
    """Each FS-Mol assay's ChEMBL assay type: B (binding), F (functional), A (ADMET) or T (toxicity)."""
    table = load_molecules(f"fsmol_{fold}", data_dir)
    return cast(dict[str, str], table.groupby("assay_id")["assay_type"].first().to_dict())


def load_moleculenet(name: str, split: str, data_dir: Path | None = None,
                     device: str | torch.device = "cpu") -> MoleculeTasks:
    """MoleculeNet ``name`` (tox21, sider, muv, toxcast): the few-shot benchmark's ``split`` (train: the first
    tasks, test: the last; Tox21 9/3, SIDER 21/6, MUV 12/5, ToxCast 450/167), one task per labelled column."""
    if name not in FEWSHOT_TASK_COUNTS:
        raise ValueError(f"unknown MoleculeNet set {name!r}; choose from {', '.join(FEWSHOT_TASK_COUNTS)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose from train, test")
    table = load_molecules(name, data_dir)
    smiles = distinct_smiles(table)
    bits, parsed = load_fingerprints(name, smiles, data_dir)
    columns = [c for c in table.columns if c != "smiles"]
    n_train = FEWSHOT_TASK_COUNTS[name][0]
    tasks = columns[:n_train] if split == "train" else columns[n_train:]
    long = table.melt(id_vars="smiles", value_vars=tasks, var_name="task", value_name="label").dropna()
    return _from_rows(f"{name}/{split}", tasks, long["task"].to_numpy(), long["smiles"].to_numpy(),
                      long["label"].to_numpy(), smiles, bits, parsed).to(device)


def draw_support(labels: Tensor, k: int, protocol: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One support draw from a task with ``labels [n]``: positions of the support ``[k]`` ("stratified": round(k p)
    actives, at least one of each label) or ``[2k]`` ("balanced": k of each), and of the query (the rest).
    ``ValueError`` if the task is too small for the draw (see :func:`can_draw`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown support protocol {protocol!r}; choose from {PROTOCOLS}")
    n, pos = len(labels), int(labels.sum())
    n_pos, n_neg = _support_counts(n, pos, k, protocol)
    if not can_draw(n, pos, k, protocol):
        raise ValueError(f"a task of {n} molecules ({pos} active) is too small for a {protocol} support of {k} "
                         "(each label needs a support molecule and a query molecule)")
    order = torch.randperm(n, generator=generator, device=generator.device).to(labels.device)
    shuffled = labels[order]
    actives, inactives = order[shuffled == 1], order[shuffled == 0]
    support = torch.cat([actives[:n_pos], inactives[:n_neg]])
    query = torch.cat([actives[n_pos:], inactives[n_neg:]])
    return support, query


def _support_counts(n: int, pos: int, k: int, protocol: str) -> tuple[int, int]:
    if protocol == "balanced":
        return k, k
    n_pos = min(max(round(k * pos / max(n, 1)), 1), k - 1)
    return n_pos, k - n_pos


def can_draw(n: int, pos: int, k: int, protocol: str, min_query: int = 1) -> bool:
    """Whether a task of ``n`` molecules, ``pos`` of them active, has a ``protocol`` support of ``k`` that leaves
    at least one active and one inactive in a query of at least ``min_query`` molecules."""
    if k < (1 if protocol == "balanced" else 2):
        return False
    n_pos, n_neg = _support_counts(n, pos, k, protocol)
    return pos > n_pos and n - pos > n_neg and n - n_pos - n_neg >= min_query


class TaskEpisodes:
    """Meta-training episodes from :class:`MoleculeTasks`: each of ``tasks`` episodes picks an assay at random
    among those large enough, draws its support (``protocol``, size ``support``; "balanced" gives 2 × support) and
    ``query`` random query molecules from the rest. ``sample(tasks, generator) -> Episode``."""

    def __init__(self, data: MoleculeTasks, support: int, query: int, protocol: str = "stratified") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown support protocol {protocol!r}; choose from {PROTOCOLS}")
        if support < 1 or query < 1:
            raise ValueError(f"support and query must be >= 1, got {support}, {query}")
        sizes, actives = data.sizes.tolist(), data.actives.tolist()
        eligible = [t for t, (n, p) in enumerate(zip(sizes, actives, strict=True))
                    if can_draw(n, p, support, protocol, query)]
        if not eligible:
            raise ValueError(f"no task of {data.name} has a {protocol} support of {support} and {query} queries")
        self._data, self._eligible = data, torch.tensor(eligible)
        self.name, self.support, self.query, self.protocol = data.name, support, query, protocol
        self.tasks_used, self.digest = len(eligible), data.digest

    @property
    def examples_per_task(self) -> int:
        """Molecules one episode draws: its support (twice ``support`` when balanced) and ``query`` (a budget's
        unit)."""
        return (2 if self.protocol == "balanced" else 1) * self.support + self.query

    def sample(self, tasks: int, generator: torch.Generator) -> Episode:
        d = self._data
        picks = self._eligible[torch.randint(len(self._eligible), (tasks,), generator=generator,
                                             device=generator.device).cpu()]
        s_mol, s_y, q_mol, q_y = [], [], [], []
        for t in picks.tolist():
            mol, y = d.task(t)
            support, rest = draw_support(y, self.support, self.protocol, generator)
            rest = rest[torch.randperm(len(rest), generator=generator, device=generator.device)[:self.query]
                        .to(rest.device)]
            s_mol.append(mol[support])
            s_y.append(y[support])
            q_mol.append(mol[rest])
            q_y.append(y[rest])
        picks = picks.to(d.label.device)
        return Episode(d.features(torch.stack(s_mol)), torch.stack(s_y), d.features(torch.stack(q_mol)),
                       torch.stack(q_y), torch.stack([picks, picks], 1))
