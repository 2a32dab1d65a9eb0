"""The deck's claims as code: each claim names its comparison, the rows it reads and one rule for its verdict.

A claim compares A with B on paired differences A − B (per test episode, or per assay; over training seeds where
there are several, see :mod:`metalearn.core.stats`), in each setting it is tested in, under one of two rules:

    "beats"    A beats B in a setting when the 95% interval of A − B lies above 0 (below 0: B beats A).
    "matches"  A matches B within ±m (a margin the claim states, e.g. 1 point on Omniglot, 2 on CIFAR-FS) when the
               90% interval of A − B lies inside (−m, +m): two one-sided tests at 5%. An interval that merely
               covers 0 is "inconclusive", never a match.

Across its settings a claim *holds* where the rule passes in every one, *holds in k of n* where it passes in some,
and *does not hold here* where it passes in none; the verdict always names the budget it was tested at, since a
claim that does not hold at a study budget may hold at the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from metalearn.core import stats

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
    verdict = ("holds" if passed == len(out) else "does not hold here" if passed == 0
               else f"holds in {passed} of {len(out)}")
    return Verdict(claim, verdict, tuple(out))


def paired_evidence(setting: str, dataset: str, a: np.ndarray, b: np.ndarray) -> Evidence:
    """A − B from the two rows' accuracies on the very same episodes, ``[units]`` or ``[seeds, units]`` each (B may
    have one seed where A has several: it is then subtracted from each)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{setting}: a paired difference needs the same episodes, got {a.shape[-1]} and "
                         f"{b.shape[-1]}")
    return Evidence(setting, dataset, a - b)
