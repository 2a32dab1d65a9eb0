"""The published numbers the chapters compare with, as data, and the catalogue of the methods the summary reads.

Each :class:`PaperNumber` is one number of one paper, keyed like a row of ``reports/results.csv``: the chapter
(``notebook``) and the ``method`` id of the row the chapter compares it with, ``dataset``, ``ways``, ``shots``,
``metric`` and, where they apply, the qualifiers ``instance`` (Santoro et al.'s n-th presentation of a class) and
``adapt_steps`` (SGD steps at test time, the sinusoid). ``comparable`` is the chapter's judgement: ``False`` where the
paper measured under a protocol that moves the number (another backbone, another test protocol, checkpoints chosen on
test); ``protocol`` names what the paper did, and what differs from ours.

A paper that evaluates with transductive BatchNorm (Relation Networks, MAML and its variants) is compared, in its
chapter, with the ``<method>_transductive`` rows: its entries carry that method id. :func:`reference_for` finds the
number for a plain method id (the study's own protocol) and marks it not comparable when only the transductive
entry exists.

The numbers are those of the chapters' comparison tables (the ``PAPER`` / ``Reference`` tables of notebooks 01–13 and
their executed copies in ``reports/notebooks/``); chapter 00 and chapter 08 have none of their own (no paper reports
these baselines on this protocol, nor few-shot hypernetworks). FS-Mol's are the means, over our 157 test assays, of
the FS-Mol authors' per-assay results (``property_prediction.fsmol_baselines``) as chapter 13 prints them (three
decimals).

:data:`METHODS` is the catalogue the summary chapter (14) tabulates: one plain method id per chapter headline (and
chapter 00's two baselines), the chapter whose rows are that method's main rows (``protonet`` has rows in 04, 08 and
13, ``maml`` in 09, 10, 12 and 13), its family in the survey's taxonomy, and a display name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import pandas as pd

Setting = tuple[str, int, int]  # (dataset, ways, shots)

SETTINGS: list[Setting] = [("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5),
                           ("cifar_fs", 5, 1), ("cifar_fs", 5, 5)]
FAMILIES = ("baseline", "metric-based", "model-based", "gradient-based")


@dataclass(frozen=True)
class PaperNumber:
    """One published number, keyed like a results row; see the module docstring."""

    notebook: str
    method: str
    dataset: str
    ways: int | None
    shots: int | None
    metric: str
    value: float
    source: str
    comparable: bool
    protocol: str
    instance: int | None = None
    adapt_steps: int | None = None

    @property
    def key(self) -> tuple:
        """What tells two entries apart (at most one entry per key)."""
        return (self.notebook, self.method, self.dataset, self.ways, self.shots, self.metric, self.instance,
                self.adapt_steps)


@dataclass(frozen=True)
class Method:
    """A method of the summary's tables: its main rows' chapter, its family, a display name."""

    notebook: str
    family: str
    name: str


METHODS: dict[str, Method] = {
    "pretrain_finetune": Method("00_background", "baseline", "pre-train + fine-tune"),
    "nearest_centroid": Method("00_background", "baseline", "pre-train + nearest centroid"),
    "siamese": Method("01_siamese", "metric-based", "Siamese network"),
    "relation_net": Method("02_relation_network", "metric-based", "Relation Network"),
    "matching_net": Method("03_matching_network", "metric-based", "Matching Network"),
    "protonet": Method("04_prototypical_networks", "metric-based", "ProtoNet"),
    "meta_gnn": Method("05_meta_gnn", "metric-based", "meta-GNN"),
    "mann": Method("06_mann", "model-based", "MANN (LRUA)"),
    "lstm": Method("06_mann", "model-based", "LSTM"),
    "meta_net": Method("07_meta_networks", "model-based", "Meta Networks"),
    "hypernet": Method("08_hypernetworks", "model-based", "task-conditioned hypernetwork"),
    "maml": Method("09_maml", "gradient-based", "MAML"),
    "fomaml": Method("10_fomaml", "gradient-based", "first-order MAML"),
    "reptile": Method("11_reptile", "gradient-based", "Reptile"),
    "anil": Method("12_anil", "gradient-based", "ANIL"),
}


def _table(notebook: str, method: str, values: Mapping[Setting, float], source: str, protocol: str,
           comparable: bool = True, metric: str = "accuracy") -> list[PaperNumber]:
    return [PaperNumber(notebook, method, d, w, s, metric, v, source, comparable, protocol)
            for (d, w, s), v in values.items()]


def _omniglot(v51: float, v55: float, v201: float, v205: float) -> dict[Setting, float]:
    return {("omniglot", 5, 1): v51, ("omniglot", 5, 5): v55, ("omniglot", 20, 1): v201, ("omniglot", 20, 5): v205}


def _cifar(v1: float, v5: float) -> dict[Setting, float]:
    return {("cifar_fs", 5, 1): v1, ("cifar_fs", 5, 5): v5}


_FSMOL_SIZES = (16, 32, 64, 128, 256)
_SANTORO_INSTANCES = (1, 2, 3, 4, 5, 10)


def _fsmol(method: str, values: tuple[float, ...], protocol: str, comparable: bool = False) -> list[PaperNumber]:
    return [PaperNumber("13_drug_discovery", method, "fsmol", None, k, "delta_auprc", v,
                        "Stanley et al. 2021 (FS-Mol authors' per-assay results, mean over our 157 test assays)",
                        comparable, protocol) for k, v in zip(_FSMOL_SIZES, values, strict=True)]


def _santoro(method: str, values: tuple[float, ...]) -> list[PaperNumber]:
    return [PaperNumber("06_mann", method, "omniglot", 5, None, "instance_accuracy", v, "Santoro et al. 2016, Tab. 1",
                        True, "Santoro's label-offset sequences of 50 steps, 20x20 Omniglot, 100,000 episodes; ours "
                        "the same protocol at 128,000 episodes (Adam instead of RMSProp)", instance=n)
            for n, v in zip(_SANTORO_INSTANCES, values, strict=True)]


def _sinusoid(method: str, values: tuple[float, float, float]) -> list[PaperNumber]:
    return [PaperNumber("09_maml", method, "sinusoid", None, 5, "mse", v, "Finn et al. 2017 (sinusoid, K = 5)", True,
                        "mean query MSE over test tasks after 1 / 5 / 10 SGD steps (step 0.01), 70,000 meta-iterations",
                        adapt_steps=k) for k, v in zip((1, 5, 10), values, strict=True)]


_SUNG = "Sung et al.: transductive BN, checkpoint with the best test accuracy, one model per setting"
_FINN = "Finn et al.: 60,000 steps of 32 (5-way) / 16 (20-way) tasks, transductive BN, last model"
_NICHOL = "Nichol et al. Tab. 2: 100k (5-way) / 200k (20-way) meta-steps, Adam inner loop, 1 query per class"

PAPERS: list[PaperNumber] = [
    *_table("01_siamese", "siamese", _omniglot(96.7, 98.4, 88.0, 96.5), "Vinyals et al. 2016 (Koch et al.'s Siamese net)",
            "Vinyals et al.'s re-implementation (backbone not stated), Vinyals split, no fine-tuning"),
    *_table("02_relation_network", "relation_net_transductive", _omniglot(99.6, 99.8, 97.6, 99.1), "Sung et al. 2018",
            _SUNG),
    *_table("02_relation_network", "relation_net_transductive", _cifar(55.0, 69.3),
            "Bertinetto et al. 2019 (Relation Net, the authors' code)", "transductive BN, early stopping on val"),
    *_table("03_matching_network", "matching_net", _omniglot(98.1, 98.9, 93.8, 98.5), "Vinyals et al. 2016",
            "Conv-4 (64), cosine (s = 1), no fine-tuning; selection not stated"),
    *_table("04_prototypical_networks", "protonet", _omniglot(98.8, 99.7, 96.0, 98.9), "Snell et al. 2017, Tab. 1",
            "Conv-4 (64), 60-way episodes, train+val after early stopping on val"),
    *_table("04_prototypical_networks", "protonet", _cifar(55.5, 72.0), "Bertinetto et al. 2019 (ProtoNet re-run)",
            "Conv-4 (64 filters), early stopping on val"),
    *_table("05_meta_gnn", "meta_gnn", _omniglot(99.2, 99.7, 97.4, 99.0), "Garcia & Bruna 2018",
            "official Omniglot encoder (Conv-4, FC 64); table not re-checked against the PDF"),
    *_table("05_meta_gnn", "meta_gnn", _cifar(61.9, 75.3), "Bertinetto et al. 2019 (GNN)",
            "official 64-96-128-256 + FC 128 encoder, wider than Conv-4", comparable=False),
    *_santoro("mann", (36.4, 82.8, 91.0, 92.6, 94.9, 98.1)),
    *_santoro("lstm", (24.4, 49.5, 55.3, 61.0, 63.6, 62.5)),
    *_table("06_mann", "mann", {("omniglot", 5, 1): 82.8, ("omniglot", 5, 5): 94.9},
            "Santoro et al. 2016 as listed by Finn et al. 2017",
            "the 2nd / 5th instance of a 50-step sequence, not K-shot episodes", comparable=False),
    *_table("07_meta_networks", "meta_net", {("omniglot", 5, 1): 98.95, ("omniglot", 20, 1): 97.00},
            "Munkhdalai & Yu 2017", "5-block CNNs (64), random 1200/423 character split, training length not stated"),
    *_sinusoid("maml", (0.67, 0.38, 0.35)),
    *_sinusoid("pretrained", (2.41, 2.23, 2.19)),
    *_table("09_maml", "maml_transductive", _omniglot(98.7, 99.9, 95.8, 98.9), "Finn et al. 2017, Tab. 1", _FINN),
    *_table("09_maml", "maml_transductive", _cifar(58.9, 71.5), "Bertinetto et al. 2019 (MAML)",
            "Bertinetto et al.'s MAML run (Conv-4, transductive BN)"),
    *_table("10_fomaml", "fomaml_transductive", _omniglot(98.3, 99.2, 89.4, 97.9), "Nichol et al. 2018, Tab. 2",
            "1st-order MAML + transduction (MAML's code and settings)"),
    *_table("11_reptile", "reptile", _omniglot(95.39, 98.90, 88.14, 96.65), "Nichol et al. 2018, Tab. 2",
            _NICHOL + ", non-transductive"),
    *_table("11_reptile", "reptile_transductive", _omniglot(97.68, 99.48, 89.43, 97.12), "Nichol et al. 2018, Tab. 2",
            _NICHOL + ", transductive"),
    *_table("12_anil", "anil_transductive", {("omniglot", 20, 1): 96.2, ("omniglot", 20, 5): 98.0},
            "Raghu et al. 2020, Tab. 2", "MAML's code and hyperparameters, transductive BN"),
    *_fsmol("maml", (0.165, 0.172, 0.178, 0.197, 0.187), "FS-Mol authors' MAML on a GNN; ours an MLP on ECFP "
            "(chapter 13's target: 0.15 at k = 16)"),
    *_fsmol("protonet", (0.211, 0.247, 0.276, 0.306, 0.292), "GNN + ECFP features, Mahalanobis distance, 10,000 steps "
            "of 64-molecule supports; ours an MLP on ECFP (chapter 13's target: 0.19 at k = 16)"),
    *_fsmol("multitask_finetune", (0.117, 0.149, 0.182, 0.228, 0.239), "a GNN multitask model and its own fine-tuning "
            "rule; ours an MLP on ECFP"),
    *_fsmol("knn", (0.056, 0.080, 0.107, 0.144, 0.175), "k-NN on raw fingerprints; ours in the multitask embedding"),
    *_fsmol("random_forest", (0.098, 0.130, 0.168, 0.218, 0.261), "random forest on the support's ECFP, grid-searched "
            "per support set; ours 50 fixed trees (the same inputs)", comparable=True),
    *[PaperNumber("13_drug_discovery", m, "tox21", 2, 10, "roc_auc", v, "PAR (Wang et al. 2021) as compiled in "
                  "Pin-Tuning (2024), Tab. 1", False, "pre-trained GIN encoder or none; PAR reports its best evaluation "
                  "over training, chosen on the test assays") for m, v in (("maml", 80.21), ("protonet", 74.98))],
]


def paper_table(papers: list[PaperNumber] | None = None) -> pd.DataFrame:
    """The published numbers as a table: the key columns (integers as ``Int64``, gaps as ``<NA>``), ``value``,
    ``source``, ``comparable`` and ``protocol``."""
    table = pd.DataFrame([asdict(p) for p in (PAPERS if papers is None else papers)])
    columns = ["notebook", "method", "dataset", "ways", "shots", "metric", "instance", "adapt_steps", "value",
               "source", "comparable", "protocol"]
    return table[columns].astype({c: "Int64" for c in ("ways", "shots", "instance", "adapt_steps")})


def lookup(method: str, dataset: str, ways: int | None, shots: int | None, metric: str = "accuracy", *,
           notebook: str | None = None, instance: int | None = None,
           adapt_steps: int | None = None) -> PaperNumber | None:
    """The entry for exactly this method id and setting (in ``notebook``, where given), or ``None``."""
    found = [p for p in PAPERS if (p.method, p.dataset, p.ways, p.shots, p.metric, p.instance, p.adapt_steps)
             == (method, dataset, ways, shots, metric, instance, adapt_steps)
             and (notebook is None or p.notebook == notebook)]
    if len(found) > 1:
        raise ValueError(f"{len(found)} entries for {method} {dataset} {ways}w{shots}s {metric}: pass notebook=")
    return found[0] if found else None


def references(notebook: str, method: str,
               metric: str = "accuracy") -> dict[tuple[str, int | None, int | None], PaperNumber]:
    """A chapter's published numbers for one method id, by setting (``{("omniglot", 5, 1): PaperNumber, ...}``): what
    a chapter sets beside its rows, read from here rather than typed into the notebook. ``ValueError`` if there are
    none (a mistyped notebook or method)."""
    found = {(p.dataset, p.ways, p.shots): p for p in PAPERS
             if (p.notebook, p.method, p.metric) == (notebook, method, metric) and p.instance is None
             and p.adapt_steps is None}
    if not found:
        known = sorted({(p.notebook, p.method) for p in PAPERS if p.notebook == notebook})
        raise ValueError(f"no {metric} numbers for {method!r} in {notebook}; its entries: {known}")
    return found


def reference_for(method: str, dataset: str, ways: int, shots: int, metric: str = "accuracy") -> PaperNumber | None:
    """The published number to set beside the *plain* method id's row (the study's non-transductive protocol): its
    own entry where there is one, else the ``<method>_transductive`` entry marked not comparable (the paper's
    transductive BatchNorm moves the number), else ``None``. The home chapter of :data:`METHODS` decides between
    chapters."""
    notebook = METHODS[method].notebook if method in METHODS else None
    own = lookup(method, dataset, ways, shots, metric, notebook=notebook)
    if own is not None:
        return own
    transductive = lookup(f"{method}_transductive", dataset, ways, shots, metric, notebook=notebook)
    if transductive is None:
        return None
    return replace(transductive, method=method, comparable=False,
                   protocol=f"{transductive.protocol} (transductive BN; ours is compared in {transductive.notebook} "
                            f"with the {transductive.method} row)")


def family_of(method: str) -> str:
    """The survey family of a catalogued method id (``KeyError`` names the catalogued ones otherwise)."""
    if method not in METHODS:
        raise KeyError(f"{method!r} is not in papers.METHODS; catalogued: {', '.join(METHODS)}")
    return METHODS[method].family
