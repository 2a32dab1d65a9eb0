"""The deck's claims as code: each claim names its comparison, the rows it reads and one rule for its verdict.

A claim compares A with B on paired differences A − B (per test episode, or per assay; over training seeds where
there are several, see :mod:`metalearn.core.stats`), in each setting it is tested in, under one of two rules:

    "beats"    A beats B in a setting when the 95% interval of A − B lies above 0 (below 0: B beats A).
    "matches"  A matches B within ±m (a margin the claim states, e.g. 1 point on Omniglot, 2 on CIFAR-FS) when the
               90% interval of A − B lies inside (−m, +m): two one-sided tests at 5%. An interval that merely
               covers 0 is "inconclusive", never a match.

Across its settings a claim *holds* where the rule passes in every one, *holds in k of n* where it passes in some,
*does not hold here* where it passes in none and fails in at least one (B beats A, or A − B lies outside the
margin), and is *inconclusive here* where every setting is undecided (more episodes or seeds would decide); the
verdict always names the budget it was tested at, since a claim that does not hold at a study budget may hold at the
paper's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metalearn.core import stats
from metalearn.study import papers

RULES = ("beats", "matches")
# the equivalence margins of "matches" claims, points of accuracy by data set (issue: ±1 on Omniglot, ±2 on CIFAR-FS)
MARGINS = {"omniglot": 1.0, "cifar_fs": 2.0}


@dataclass(frozen=True)
class Evidence:
    """A − B in one setting: the paired differences ``[units]`` or ``[seeds, units]`` (``paired=False``: the two
    rows were scored on different episodes and ``differences`` is empty; ``mean`` and ``half_width`` then come from
    their own intervals, and the rule reads the unpaired interval)."""

    setting: str  # "omniglot 5w1s"
    dataset: str
    differences: np.ndarray = field(default_factory=lambda: np.zeros(0))
    paired: bool = True
    unpaired: tuple[float, float] | None = None  # (mean, 95% half-width) when not paired

    def interval(self, level: float = 0.95) -> stats.Interval:
        if self.paired:
            return stats.crossed_interval(self.differences, level)
        if self.unpaired is None:
            raise ValueError(f"{self.setting}: unpaired evidence needs (mean, half-width)")
        mean, half95 = self.unpaired  # scaled to the level from its 95% normal half-width
        from scipy.stats import norm

        return stats.Interval(mean, half95 * float(norm.ppf(0.5 + level / 2) / norm.ppf(0.975)), float("inf"), 0,
                              level=level)


@dataclass(frozen=True)
class Claim:
    """One claim of the deck: ``a`` ``rule`` ``b`` (e.g. "FOMAML matches MAML"), tested by ``experiment`` at
    ``budget`` (said in the verdict's sentence)."""

    chapter: str
    statement: str
    a: str
    b: str
    rule: str
    experiment: str
    budget: str
    margins: Mapping[str, float] = field(default_factory=lambda: dict(MARGINS))

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"{self.statement!r}: rule must be one of {RULES}, got {self.rule!r}")
        if not self.budget:
            raise ValueError(f"{self.statement!r}: a claim names the budget it is tested at")


@dataclass(frozen=True)
class SettingVerdict:
    setting: str
    outcome: str  # beats: "A", "B", "neither"; matches: "equivalent", "different", "inconclusive"
    interval: stats.Interval
    paired: bool
    margin: float | None = None

    @property
    def passes(self) -> bool:
        return self.outcome in ("A", "equivalent")

    def text(self) -> str:
        how = "" if self.paired else ", unpaired"
        within = f", margin ±{self.margin:g}" if self.margin is not None else ""
        level = f"{100 * self.interval.level:.0f}% CI"
        return f"{self.setting} {self.interval.mean:+.2f} ± {self.interval.half_width:.2f} ({level}{within}{how})"


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # "holds", "holds in k of n", "does not hold here"
    settings: tuple[SettingVerdict, ...]

    @property
    def passed(self) -> int:
        return sum(s.passes for s in self.settings)

    def sentence(self) -> str:
        """The verdict in words, with its budget and every setting's estimate."""
        c, n = self.claim, len(self.settings)
        if c.rule == "beats":
            against = sum(s.outcome == "B" for s in self.settings)
            counts = (f"{c.a} ahead in {self.passed} of {n}, behind in {against}, not distinguishable in "
                      f"{n - self.passed - against}")
        else:
            different = sum(s.outcome == "different" for s in self.settings)
            counts = (f"{c.a} within the margin of {c.b} in {self.passed} of {n}, outside it in {different}, "
                      f"inconclusive in {n - self.passed - different}")
        return f"{self.verdict} at {c.budget}: {counts} ({'; '.join(s.text() for s in self.settings)})"


def judge(claim: Claim, evidence: Sequence[Evidence]) -> Verdict:
    """The claim's verdict from its evidence, one setting at a time, by its one rule."""
    if not evidence:
        raise ValueError(f"{claim.statement!r}: no evidence (the rows it reads are missing)")
    out = []
    for e in evidence:
        if claim.rule == "beats":
            ci = e.interval(0.95)
            outcome = "A" if ci.low > 0 else "B" if ci.high < 0 else "neither"
            out.append(SettingVerdict(e.setting, outcome, ci, e.paired))
        else:
            if e.dataset not in claim.margins:
                raise ValueError(f"{claim.statement!r}: no margin for {e.dataset}; margins: {dict(claim.margins)}")
            margin = claim.margins[e.dataset]
            ci = e.interval(0.90)
            outcome = ("equivalent" if -margin < ci.low and ci.high < margin
                       else "different" if ci.low >= margin or ci.high <= -margin else "inconclusive")
            out.append(SettingVerdict(e.setting, outcome, ci, e.paired, margin))
    passed = sum(s.passes for s in out)
    undecided = all(s.outcome in ("neither", "inconclusive") for s in out)
    verdict = ("holds" if passed == len(out) else f"holds in {passed} of {len(out)}" if passed
               else "inconclusive here" if undecided else "does not hold here")
    return Verdict(claim, verdict, tuple(out))


def paired_evidence(setting: str, dataset: str, a: np.ndarray, b: np.ndarray) -> Evidence:
    """A − B from the two rows' accuracies on the very same episodes, ``[units]`` or ``[seeds, units]`` each (B may
    have one seed where A has several: it is then subtracted from each)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{setting}: a paired difference needs the same episodes, got {a.shape[-1]} and "
                         f"{b.shape[-1]}")
    return Evidence(setting, dataset, a - b)


# ---------------------------------------------------------------------------------------------------------------------
# The rows the claims read: the results table and every chapter's per-episode accuracies
# ---------------------------------------------------------------------------------------------------------------------
EPISODE_COLUMNS = ["method", "dataset", "ways", "shots", "seed", "queries", "data", "episode", "accuracy"]
SETTINGS = [("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5), ("cifar_fs", 5, 1),
            ("cifar_fs", 5, 5)]
QUALIFIERS = ("variant", "trained_on", "adapt_steps", "meta_batch", "inner_steps", "instance")


def label(setting: tuple) -> str:
    """``("omniglot", 5, 1)`` -> ``"omniglot 5w1s"``."""
    dataset, ways, shots = setting
    return f"{dataset} {ways}w{shots}s"


def _is(column: pd.Series, value: str | int | None) -> pd.Series:
    """column == value, with <NA> read as False (value None: the column is empty)."""
    return column.isna() if value is None else column.eq(value).fillna(False).astype(bool)


class Results:
    """The committed results (``table``: reports/results.csv) and the chapters' per-episode test accuracies
    (``episodes_dir``: reports/episodes/<notebook>.csv), as the claims read them."""

    def __init__(self, table: pd.DataFrame, episodes_dir: Path | None = None, shared_queries: int = 15) -> None:
        self.table, self.shared = table, f"_transductive_{shared_queries}q"
        self.episodes: dict[tuple, tuple[tuple, np.ndarray]] = {}
        for path in sorted(Path(episodes_dir).glob("*.csv")) if episodes_dir else []:
            t = pd.read_csv(path)
            if list(t.columns) != EPISODE_COLUMNS:
                raise ValueError(f"{path}: not an episodes file (columns {EPISODE_COLUMNS})")
            for (method, dataset, ways, shots, seed, queries, data), g in t.groupby(EPISODE_COLUMNS[:7]):
                self.episodes[(path.stem, method, dataset, ways, shots)] = (
                    (seed, queries, data), g.sort_values("episode").accuracy.to_numpy())

    def row(self, notebook: str, method: str, dataset: str, ways: int | None, shots: int | None,
            metric: str = "accuracy", scale: str = "study", **qualifiers: str | int | None) -> pd.Series | None:
        """The one row of ``method`` from ``notebook`` in a setting with exactly the given qualifiers, or None."""
        t = self.table
        t = t[(t.notebook == notebook) & (t.method == method) & (t.dataset == dataset) & (t.metric == metric)
              & (t.scale == scale) & _is(t.ways, ways) & _is(t.shots, shots)]
        for q in QUALIFIERS:
            t = t[_is(t[q], qualifiers.get(q))]
        if len(t) > 1:
            raise ValueError(f"{len(t)} rows for {notebook} {method} {dataset} {ways}w{shots}s {metric} {qualifiers}")
        return t.iloc[0] if len(t) else None

    def evidence(self, setting: str, a: pd.Series, b: pd.Series) -> Evidence:
        """A − B for two rows: paired on their per-episode accuracies where both chapters wrote them for the very
        same episodes (seed, queries, test data), else unpaired (the rows' own intervals combined)."""
        ea, eb = (self.episodes.get((r.notebook, r.method, r.dataset, r.ways, r.shots)) for r in (a, b))
        if ea is not None and eb is not None and ea[0] == eb[0] and len(ea[1]) == len(eb[1]):
            return paired_evidence(setting, str(a.dataset), ea[1], eb[1])
        return Evidence(setting, str(a.dataset), paired=False, unpaired=unpaired(a, b))

    def gradient_row(self, method: str, setting: tuple) -> pd.Series | None:
        """A gradient-based method's row on the shared test episodes (transductive BN), where its chapter wrote
        one: the row that pairs with the other families'."""
        return self.row(home(method), method + self.shared, *setting)


def unpaired(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """a − b for two rows and the 95% half-width sqrt(ci_a² + ci_b²) (independent estimates)."""
    return float(a.value - b.value), float(np.hypot(a.ci95, b.ci95))


def home(method: str) -> str:
    """The chapter whose rows are a catalogued method's main rows."""
    return papers.METHODS[method].notebook


# ---------------------------------------------------------------------------------------------------------------------
# The deck's claims: each a Claim and the function that gathers its evidence from the results
# ---------------------------------------------------------------------------------------------------------------------
STUDY = "the study budget (each model's training seconds in results.csv; budgets not matched across chapters)"
FAMILY_OF = {"metric-based": ("siamese", "relation_net", "matching_net", "protonet", "meta_gnn"),
             "model-based": ("mann", "meta_net", "hypernet"),
             "gradient-based": ("maml", "fomaml", "reptile", "anil")}


def _best_of_family(r: Results, family: str, setting: tuple) -> pd.Series | None:
    """The most accurate main row of a family's methods in a setting (a gradient-based method's row on the shared
    episodes, which pairs with the other chapters')."""
    rows = []
    for method in FAMILY_OF[family]:
        row = r.gradient_row(method, setting) if family == "gradient-based" else None
        rows.append(row if row is not None else r.row(home(method), method, *setting))
    found = [x for x in rows if x is not None]
    return max(found, key=lambda x: x.value) if found else None


def _family_vs_baseline(family: str):
    def gather(r: Results) -> list[Evidence]:
        out = []
        for s in SETTINGS:
            best, base = _best_of_family(r, family, s), r.row("00_background", "pretrain_finetune", *s)
            if best is not None and base is not None:
                out.append(r.evidence(f"{label(s)} ({best.method})", best, base))
        return out
    return gather


def _pairs(a: tuple[str, str], b: tuple[str, str], settings=SETTINGS, **qualifiers):
    """A − B in each setting for two (notebook, method) rows."""
    def gather(r: Results) -> list[Evidence]:
        out = []
        for s in settings:
            ra, rb = r.row(*a, *s, **qualifiers), r.row(*b, *s, **qualifiers)
            if ra is not None and rb is not None:
                out.append(r.evidence(label(s), ra, rb))
        return out
    return gather


def _shared_pairs(a: str, b: str):
    """A − B for two gradient-based methods on the shared episodes (transductive BN), paired."""
    def gather(r: Results) -> list[Evidence]:
        out = []
        for s in SETTINGS:
            ra, rb = r.gradient_row(a, s), r.gradient_row(b, s)
            if ra is not None and rb is not None:
                out.append(r.evidence(label(s), ra, rb))
        return out
    return gather


def _more_ways(r: Results) -> list[Evidence]:
    out = []
    for ways in (5, 20):
        base = r.row("04_prototypical_networks", "protonet", "omniglot", ways, 1)
        for budget in ("episode", "image"):
            other = r.row("04_prototypical_networks", f"protonet_train_5way_{budget}_matched", "omniglot", ways, 1)
            if base is not None and other is not None:
                out.append(r.evidence(f"omniglot {ways}w1s, equal {budget}s", base, other))
    return out


def _task_shift(r: Results) -> list[Evidence]:
    t = r.table
    shifted = t[t.trained_on.notna() & (t.metric == "accuracy") & (t.scale == "study")]
    out = []
    for _, s in shifted.iterrows():
        h = r.row(s.notebook, s.method, s.dataset, s.ways, s.shots)
        if h is not None:
            out.append(Evidence(f"{s.method} {s.trained_on}→{s.dataset} {s.ways}w{s.shots}s", str(s.dataset),
                                paired=False, unpaired=unpaired(h, s)))
    return out


def _mann(r: Results) -> list[Evidence]:
    a = r.row("06_mann", "mann", "omniglot", 5, None, "instance_accuracy", instance=2)
    b = r.row("06_mann", "lstm", "omniglot", 5, None, "instance_accuracy", instance=2)
    out = [r.evidence("2nd instance", a, b)] if a is not None and b is not None else []
    return out + _pairs(("06_mann", "mann"), ("06_mann", "lstm"), [("omniglot", 5, 1), ("omniglot", 5, 5)])(r)


def _static_hypernet(r: Results) -> list[Evidence]:
    out = []
    for method in ("hypernet_static", "hypernet_static_z16", "hypernet_static_z4"):
        a, b = (r.row("08_hypernetworks", m, "omniglot", 5, 1) for m in (method, "protonet"))
        if a is not None and b is not None:
            out.append(r.evidence(f"omniglot 5w1s {method}", a, b))
    return out


def _sinusoid(a: tuple[str, str, dict], b: tuple[str, str, dict], steps=(1, 10)):
    """B − A in MSE (lower is better, so a positive difference is A better) after each number of test steps."""
    def gather(r: Results) -> list[Evidence]:
        out = []
        for k in steps:
            ra = r.row(a[0], a[1], "sinusoid", None, 5, "mse", adapt_steps=k, **a[2])
            rb = r.row(b[0], b[1], "sinusoid", None, 5, "mse", adapt_steps=k, **b[2])
            if ra is not None and rb is not None:
                out.append(Evidence(f"MSE after {k} step{'s' if k > 1 else ''}", "sinusoid", paired=False,
                                    unpaired=unpaired(rb, ra)))
        return out
    return gather


def _drugs(dataset: str, metric: str, sizes: Sequence[tuple[int | None, int | None]]):
    """The best meta-initialisation − multitask fine-tuning on new assays (unpaired: 13 pairs them per assay)."""
    def gather(r: Results) -> list[Evidence]:
        out = []
        for ways, shots in sizes:
            mt = r.row("13_drug_discovery", "multitask_finetune", dataset, ways, shots, metric)
            metas = [x for x in (r.row("13_drug_discovery", m, dataset, ways, shots, metric)
                                 for m in ("maml", "fomaml", "anil", "protonet")) if x is not None]
            if mt is not None and metas:
                best = max(metas, key=lambda x: x.value)
                out.append(Evidence(f"{dataset} k={shots} ({best.method})", dataset, paired=False,
                                    unpaired=unpaired(best, mt)))
        return out
    return gather


def _fsmol_sizes(r: Results) -> list[tuple[None, int]]:
    t = r.table
    shots = t[(t.dataset == "fsmol") & (t.method == "multitask_finetune")].shots.dropna().unique()
    return [(None, int(k)) for k in sorted(shots)]


CLAIMS: list[tuple[Claim, Callable[[Results], list[Evidence]]]] = [
    *[(Claim("00", f"{family.capitalize()} meta-learning beats pre-training + fine-tuning", f"best {family}",
             "pre-train + fine-tune", "beats", "best main row of the family vs pretrain_finetune, six settings", STUDY),
       _family_vs_baseline(family)) for family in FAMILY_OF],
    (Claim("04", "Training with more ways than at test time gives better embeddings", "60-way ProtoNet",
           "5-way ProtoNet", "beats", "60-way vs 5-way training, at equal episodes and at equal images", STUDY),
     _more_ways),
    (Claim("01–05", "Metric-based models are fragile under task shift", "home data", "the other data set", "beats",
           "each model on its own data set's test classes vs the other's in its format", STUDY), _task_shift),
    (Claim("03", "Full Context Embeddings improve Matching Networks", "FCE", "simple embedding", "beats",
           "FCE vs simple embedding, six settings", STUDY),
     _pairs(("03_matching_network", "matching_net_fce"), ("03_matching_network", "matching_net"))),
    (Claim("06", "A memory-augmented network (MANN) beats an LSTM at one-shot recall", "MANN", "LSTM", "beats",
           "Santoro's 2nd-instance accuracy and the shared 5-way episodes", STUDY), _mann),
    (Claim("08", "A task-conditioned hypernetwork can generate the classifier from the support set", "hypernet",
           "ProtoNet", "matches", "hypernetwork vs ProtoNet at the same budget, six settings", STUDY),
     _pairs(("08_hypernetworks", "hypernet"), ("08_hypernetworks", "protonet"))),
    (Claim("08", "A static hypernetwork compresses the network at little cost", "static hypernet", "ProtoNet",
           "matches", "generated Conv-4 kernels (z = 64 / 16 / 4) vs ProtoNet's Conv-4", STUDY), _static_hypernet),
    (Claim("09", "MAML beats pre-training on all tasks (sinusoid regression)", "MAML", "pre-trained", "beats",
           "MSE after 1 and 10 SGD steps on K = 5 points (lower is better)", STUDY),
     _sinusoid(("09_maml", "maml", {}), ("09_maml", "pretrained", {}))),
    (Claim("09", "MAML beats pre-training + fine-tuning on few-shot classification", "MAML",
           "pre-train + fine-tune", "beats", "MAML (09, shared episodes, transductive BN) vs chapter 00", STUDY),
     lambda r: [r.evidence(label(s), a, b) for s in SETTINGS
                if (a := r.gradient_row("maml", s)) is not None
                and (b := r.row("00_background", "pretrain_finetune", *s)) is not None]),
    (Claim("10", "First-order MAML matches MAML at little cost in accuracy", "FOMAML", "MAML", "matches",
           "FOMAML vs MAML at equal meta-steps, shared episodes, transductive BN", STUDY),
     _shared_pairs("fomaml", "maml")),
    (Claim("11", "Reptile with k = 1 is joint training", "Reptile k = 1", "joint training", "matches",
           "sinusoid MSE after 1 and 10 test steps", STUDY, margins={"sinusoid": 0.05}),
     _sinusoid(("11_reptile", "reptile", {"inner_steps": 1}), ("11_reptile", "joint", {"inner_steps": 0}))),
    (Claim("11", "Reptile with k > 1 beats joint training", "Reptile k = 5", "joint training", "beats",
           "sinusoid MSE after 1 and 10 test steps (lower is better)", STUDY),
     _sinusoid(("11_reptile", "reptile", {"inner_steps": 5}), ("11_reptile", "joint", {"inner_steps": 0}))),
    (Claim("11", "Reptile performs like first-order MAML", "Reptile", "FOMAML", "matches",
           "Reptile (11) vs FOMAML (10) at about equal seconds, shared episodes, transductive BN", STUDY),
     _shared_pairs("reptile", "fomaml")),
    (Claim("12", "ANIL matches MAML with a much cheaper meta-step", "ANIL", "MAML", "matches",
           "ANIL vs MAML at equal meta-steps, shared episodes, transductive BN", STUDY),
     _shared_pairs("anil", "maml")),
    (Claim("13", "Meta-initialisations beat multitask pre-training + fine-tuning on new assays (FS-Mol)",
           "best meta-initialisation", "multitask fine-tuning", "beats", "FS-Mol test assays, ΔAUPRC", STUDY),
     lambda r: _drugs("fsmol", "delta_auprc", _fsmol_sizes(r))(r)),
    (Claim("13", "…and on the MoleculeNet few-shot sets", "best meta-initialisation", "multitask fine-tuning",
           "beats", "Tox21, SIDER, MUV, ToxCast, 10 + 10 support, ROC-AUC", STUDY),
     lambda r: [e for d in ("tox21", "sider", "muv", "toxcast") for e in _drugs(d, "roc_auc", [(2, 10)])(r)]),
]


def judge_all(r: Results) -> pd.DataFrame:
    """Every claim of :data:`CLAIMS` judged on ``r``: one row per claim with its chapter, statement, experiment,
    rule, verdict and the verdict's sentence (budget and every setting's estimate); a claim whose rows are missing
    reads "not measured"."""
    records = []
    for claim, gather in CLAIMS:
        evidence = gather(r)
        if evidence:
            v = judge(claim, evidence)
            verdict, sentence = v.verdict, v.sentence()
        else:
            verdict, sentence = "not measured", "its rows are not in results.csv"
        records.append({"chapter": claim.chapter, "claim": claim.statement, "experiment": claim.experiment,
                        "rule": claim.rule, "verdict": verdict, "evidence": sentence})
    return pd.DataFrame(records)
