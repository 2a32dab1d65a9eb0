"""The deck's claims as code: each claim names its comparison, the rows it reads and one rule for its verdict.

A claim compares A with B in each setting it is tested in, under one of two rules:

    "beats"    A beats B in a setting when the 95% interval of A − B lies above 0 (below 0: B beats A).
    "matches"  A matches B within ±m when the 90% interval of A − B lies inside (−m, +m): two one-sided tests at 5%.
               The margin is the claim's, by data set (``stats.MARGINS``: 1 point on Omniglot, 2 on CIFAR-FS) or
               as a fraction of B's value. An interval that merely covers 0 is "inconclusive", never a match; a setting
               whose 90% half-width is already ≥ m cannot show a match at its sample size: it is "unreachable"
               (counted apart, never a pass and never "different").

The estimate of A − B in a setting is

- *paired* where both rows' chapters wrote per-unit scores (``reports/episodes/<notebook>.csv``, see
  :func:`read_units`) of the very same test units: equal episode seed, queries, test data and metric, and the same
  units (test episodes; test assays for the molecules). The differences are ``[seeds, units]`` over the training
  seeds (:func:`pair_seeds`) and their interval is :func:`metalearn.core.stats.crossed_interval`'s;
- *unpaired* otherwise, from the rows' own intervals (:func:`combine`): se_i = ci95_i / t_{0.975, n_i − 1}
  (n_i = n_test), se = √(Σ se_i²), the interval at any level with Welch–Satterthwaite's degrees of freedom; normal
  quantiles where a row has no n_test (the sentence says so).

A method with several training seeds in a setting has one row per seed in ``results.csv``; :meth:`Results.row`
gathers them into one (:func:`aggregate`). Where a claim picks "the best" of several methods it picks on the
validation rows (``val_accuracy``, ``val_roc_auc``, ``val_delta_auprc``: the scores the chapters selected their
models on), never on the test rows it then judges (:meth:`Results.choose`).

Across its settings a claim *holds* where the rule passes in every measured one; *holds in k of n, behind in m*
(matches: *outside the margin in m*) where it passes in some; *does not hold here* where it passes in none and fails
in at least one (B beats A, or A − B lies outside the margin); *unreachable* where no setting's margin can be met;
*inconclusive here* where every setting is otherwise undecided (more episodes or seeds would decide); and *not
measured* where its rows are missing. Every setting's sentence prints both sides' budgets from their rows: optimiser
steps, training examples (the deterministic unit) and measured seconds (``train_steps``, ``train_examples``,
``train_seconds``; "–" where a row has none) and the number of training seeds, since a claim that does not hold at a
study budget may hold at the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from metalearn.core import stats
from metalearn.core.results import EPISODE_COLUMNS, QUALIFIERS
from metalearn.study import papers

RULES = ("beats", "matches")
BEATS_LEVEL, MATCHES_LEVEL = 0.95, 0.90  # "beats": a 95% interval; "matches": TOST at 5%, i.e. a 90% interval
# the kinds of verdict a claim gets, in the order the summary counts them (:func:`count_verdicts`)
VERDICTS = ("holds", "holds in k of n", "does not hold here", "inconclusive here", "unreachable", "not measured")
Z975 = float(sps.norm.ppf(0.975))


def _quantile(level: float, df: float | None) -> float:
    """The two-sided ``level`` quantile of t with ``df`` degrees of freedom (None: the normal's)."""
    if not 0 < level < 1:
        raise ValueError(f"a confidence level lies in (0, 1), got {level}")
    p = 0.5 + level / 2
    return float(sps.norm.ppf(p)) if df is None else float(sps.t.ppf(p, df))


def _missing(value: Any) -> bool:
    """None, NaN, <NA> or NaT."""
    return value is None or bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _get(row: pd.Series, name: str, default: Any = None) -> Any:
    """``row[name]``, or ``default`` where the row has no such entry or it is <NA>."""
    value = row.get(name)
    return default if _missing(value) else value


def _num(x: float, sign: bool = False) -> str:
    """A number for a sentence: two decimals (points of accuracy, MSE), three significant digits below 0.1 (ΔAUPRC)."""
    return f"{x:{'+' if sign else ''}{'.2f' if abs(x) >= 0.1 or x == 0 or not math.isfinite(x) else '.3g'}}"


def _key(value: Any) -> Any:
    """A value as a dictionary key: <NA> -> None, an integral number -> int (a CSV column with gaps reads 15 as
    15.0), anything else as it is."""
    if _missing(value):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Budgets and unpaired estimates: what the rows say about one side
# ---------------------------------------------------------------------------------------------------------------------
def _span(values: Sequence[float], unit: str = "") -> str:
    """"1,200" (one value, or all equal), "1,000 to 1,200" (seeds differ) or "–" (no row has one)."""
    known = [float(v) for v in values if not pd.isna(v)]
    if not known:
        return "–"
    lo, hi = min(known), max(known)
    return (f"{lo:,.0f}" if lo == hi else f"{lo:,.0f} to {hi:,.0f}") + unit


@dataclass(frozen=True)
class Budget:
    """What one side of a comparison was trained with in one setting, one entry per training seed: optimiser steps,
    training examples (the deterministic unit of a budget) and measured seconds (NaN where the row has none)."""

    label: str  # "protonet (04)"
    seeds: tuple[int, ...]
    steps: tuple[float, ...] = ()
    examples: tuple[float, ...] = ()
    seconds: tuple[float, ...] = ()

    @classmethod
    def of(cls, rows: pd.DataFrame) -> Budget:
        """The budget of the training seeds' rows of one method in one setting (one row per seed)."""
        first = rows.iloc[0]
        def column(name: str) -> tuple[float, ...]:
            return tuple(float(v) if not pd.isna(v) else math.nan
                         for v in (rows[name] if name in rows.columns else [math.nan] * len(rows)))
        seeds = tuple(int(s) for s in rows.seed) if "seed" in rows.columns and rows.seed.notna().all() \
            else tuple(range(len(rows)))
        return cls(f"{first.method} ({str(_get(first, 'notebook', ''))[:2]})", seeds, column("train_steps"),
                   column("train_examples"), column("train_seconds"))

    def text(self) -> str:
        n = len(self.seeds)
        return (f"{self.label}: {_span(self.steps)} steps, {_span(self.examples)} examples, "
                f"{_span(self.seconds, ' s')}, {n} seed{'' if n == 1 else 's'}")


@dataclass(frozen=True)
class Unpaired:
    """An estimate from independent rows' own intervals: the mean, its standard error, Welch–Satterthwaite's degrees
    of freedom (None: a row has no n_test, and the interval uses normal quantiles) and the fewest units of a row."""

    mean: float
    se: float
    df: float | None
    n: int = 0

    def interval(self, level: float = 0.95) -> stats.Interval:
        df = math.inf if self.df is None else self.df
        return stats.Interval(self.mean, _quantile(level, self.df) * self.se, df, self.n, level=level)


def standard_error(row: pd.Series) -> tuple[float, float | None, int]:
    """A row's standard error, its degrees of freedom and units (n_test): ci95 / t_{0.975, n − 1} with n − 1 degrees
    of freedom; ci95 / z_{0.975} and None where n_test is missing (or < 2); an infinite error where ci95 is missing.
    An :func:`aggregate` of several seeds carries its own ``se`` and ``df``."""
    n = _get(row, "n_test")
    units = int(n) if isinstance(n, (int, float, np.integer, np.floating)) else 0
    if int(_get(row, "seeds", 1)) > 1 and _get(row, "se") is not None:
        df = _get(row, "df")
        return float(row["se"]), None if df is None else float(df), units
    ci95 = _get(row, "ci95")
    if ci95 is None:
        return math.inf, None, units
    if units < 2:
        return float(ci95) / Z975, None, units
    return float(ci95) / float(sps.t.ppf(0.975, units - 1)), float(units - 1), units


def combine(terms: Sequence[tuple[pd.Series, float]]) -> Unpaired:
    """Σ sign·value over independent rows ``(row, sign)`` with se = √(Σ se_i²) and Welch–Satterthwaite's degrees of
    freedom (Σ se_i²)² / Σ (se_i⁴ / df_i); normal quantiles (df None) where a row has no n_test."""
    mean = sum(sign * float(row["value"]) for row, sign in terms)
    errors = [standard_error(row) for row, _ in terms]
    var = sum(se ** 2 for se, _, _ in errors)
    n = min(units for _, _, units in errors)
    dfs = [df for _, df, _ in errors if df is not None]
    if math.isinf(var) or len(dfs) < len(errors):
        return Unpaired(mean, math.sqrt(var), None, n)
    denom = sum(se ** 4 / df for (se, _, _), df in zip(errors, dfs, strict=True))
    return Unpaired(mean, math.sqrt(var), var ** 2 / denom if denom > 0 else sum(dfs), n)


def unpaired(a: pd.Series, b: pd.Series) -> Unpaired:
    """a − b for two independent rows (see :func:`combine`)."""
    return combine([(a, 1.0), (b, -1.0)])


def aggregate(rows: pd.DataFrame) -> pd.Series:
    """One row for the training seeds' rows of one method in one setting (one row per seed), with ``seeds`` (their
    number). One seed: its row. Several: ``value`` the mean over seeds, and a standard error that counts both the
    spread between seeds and the test units' noise, se² = s²_seeds / S + mean(se_s²) (conservative: the units' term
    is not divided by S, as the seeds are usually scored on the same test units), with Satterthwaite's degrees of
    freedom; ``ci95`` its 95% half-width, ``n_test`` the fewest units, ``train_*`` the seeds' means."""
    out = rows.iloc[0].copy()
    out["seeds"] = len(rows)
    if len(rows) == 1:
        return out
    s = len(rows)
    values = rows["value"].astype(float).to_numpy()
    errors = [standard_error(r) for _, r in rows.iterrows()]
    between, within = float(values.var(ddof=1)) / s, float(np.mean([e[0] ** 2 for e in errors]))
    se = math.sqrt(between + within)
    dfs = [df for _, df, _ in errors if df is not None]
    df: float | None = None
    if len(dfs) == s and not math.isinf(within):
        denom = between ** 2 / (s - 1) + within ** 2 / min(dfs)
        df = (between + within) ** 2 / denom if denom > 0 else float(s - 1)
    out["value"], out["se"], out["df"] = float(values.mean()), se, math.nan if df is None else df
    out["ci95"] = _quantile(0.95, df) * se
    out["n_test"] = min(e[2] for e in errors) or pd.NA
    for column in BUDGET_COLUMNS:
        if column in rows.columns:
            out[column] = rows[column].mean()
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Evidence, claims and verdicts
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """A − B in one setting: the paired differences ``[units]`` or ``[seeds, units]``, or (``paired=False``) the
    :class:`Unpaired` estimate of independent rows; ``missing`` says why a setting is not measured (no interval).
    ``a`` and ``b`` are the two sides' budgets (a side may be several rows: task shift's home and shifted models),
    ``note`` how the rows were chosen or paired, ``reference`` B's value (for a margin relative to it)."""

    setting: str  # "omniglot 5w1s"
    dataset: str
    differences: np.ndarray = field(default_factory=lambda: np.zeros(0))
    paired: bool = True
    unpaired: Unpaired | None = None
    a: tuple[Budget, ...] = ()
    b: tuple[Budget, ...] = ()
    note: str = ""
    reference: float | None = None
    missing: str = ""

    @property
    def measured(self) -> bool:
        return not self.missing

    def interval(self, level: float = 0.95) -> stats.Interval:
        if self.missing:
            raise ValueError(f"{self.setting}: not measured ({self.missing})")
        if self.paired:
            return stats.crossed_interval(self.differences, level)
        if self.unpaired is None:
            raise ValueError(f"{self.setting}: unpaired evidence needs its Unpaired estimate")
        return self.unpaired.interval(level)


@dataclass(frozen=True)
class Claim:
    """One claim of the deck: ``a`` ``rule`` ``b`` (e.g. "FOMAML matches MAML"), tested by ``experiment``;
    ``budget`` an optional short description of the budget (the numbers come from the rows). A "matches" claim's
    margin is ``margins[dataset]``, or ``relative_margin`` × B's value where that is set."""

    chapter: str
    statement: str
    a: str
    b: str
    rule: str
    experiment: str
    budget: str = ""
    margins: Mapping[str, float] = field(default_factory=lambda: dict(stats.MARGINS))
    relative_margin: float | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"{self.statement!r}: rule must be one of {RULES}, got {self.rule!r}")
        if any(not m > 0 for m in self.margins.values()) or (self.relative_margin is not None
                                                             and not self.relative_margin > 0):
            raise ValueError(f"{self.statement!r}: an equivalence margin is > 0")

    def margin(self, e: Evidence) -> float:
        """The equivalence margin in the setting of ``e``."""
        if self.relative_margin is not None:
            if e.reference is None:
                raise ValueError(f"{self.statement!r}: a relative margin needs B's value in {e.setting}")
            return self.relative_margin * abs(e.reference)
        if e.dataset not in self.margins:
            raise ValueError(f"{self.statement!r}: no margin for {e.dataset}; margins: {dict(self.margins)}")
        return self.margins[e.dataset]

    def margin_text(self) -> str:
        """"" for a beats claim; "±1 (omniglot), ±2 (cifar_fs)" or "±10% of joint training" for a matches claim."""
        if self.rule != "matches":
            return ""
        if self.relative_margin is not None:
            return f"±{100 * self.relative_margin:g}% of {self.b}"
        return ", ".join(f"±{m:g} ({d})" for d, m in self.margins.items())


@dataclass(frozen=True)
class SettingVerdict:
    """The rule's outcome in one setting: beats: "A", "B", "neither"; matches: "equivalent", "different",
    "inconclusive", "unreachable"; either: "not measured" (no interval)."""

    evidence: Evidence
    outcome: str
    interval: stats.Interval | None = None
    margin: float | None = None

    @property
    def setting(self) -> str:
        return self.evidence.setting

    @property
    def paired(self) -> bool:
        return self.evidence.paired

    @property
    def passes(self) -> bool:
        return self.outcome in ("A", "equivalent")

    @property
    def fails(self) -> bool:
        return self.outcome in ("B", "different")

    def text(self) -> str:
        """The setting's estimate, how it was made, and both sides' budgets."""
        e, ci = self.evidence, self.interval
        if ci is None:
            return f"{e.setting}: not measured ({e.missing})"
        if e.paired:
            seeds = ci.seeds
            how = f"paired over {ci.n} units × {seeds} seed{'' if seeds == 1 else 's'}"
        else:
            normal = e.unpaired is not None and e.unpaired.df is None
            how = "unpaired" + (", normal quantile: n_test unknown" if normal else f", Welch df {ci.df:.0f}")
        if self.outcome == "unreachable":
            head = (f"{e.setting}: the margin ±{_num(self.margin or 0)} cannot be met with {ci.n} units (half-width "
                    f"{_num(ci.half_width)}; {_num(ci.mean, True)}, {how})")
        else:
            within = f", margin ±{_num(self.margin)}" if self.margin is not None else ""
            head = (f"{e.setting} {_num(ci.mean, True)} ± {_num(ci.half_width)} ({100 * ci.level:.0f}% CI{within}, "
                    f"{how})")
        sides = "; ".join(f"{side} {b.text()}" for side, budgets in (("A", e.a), ("B", e.b)) for b in budgets)
        return head + (f" [{sides}]" if sides else "") + (f" ({e.note})" if e.note else "")


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # one of VERDICTS, "holds in k of n, ..." written out
    settings: tuple[SettingVerdict, ...]

    @property
    def passed(self) -> int:
        return sum(s.passes for s in self.settings)

    def count(self, *outcomes: str) -> int:
        return sum(s.outcome in outcomes for s in self.settings)

    def sentence(self) -> str:
        """The verdict in words with every setting's estimate and both sides' budgets."""
        c = self.claim
        n = len(self.settings) - self.count("not measured")
        if c.rule == "beats":
            against = self.count("B")
            counts = (f"{c.a} ahead in {self.passed} of {n}, behind in {against}, not distinguishable in "
                      f"{n - self.passed - against}")
        else:
            different, out_of_reach = self.count("different"), self.count("unreachable")
            counts = (f"{c.a} within the margin of {c.b} in {self.passed} of {n}, outside it in {different}, "
                      f"unreachable in {out_of_reach}, inconclusive in {n - self.passed - different - out_of_reach}")
        if n == 0:
            counts = f"no setting measured of {len(self.settings)}"
        elif self.count("not measured"):
            counts += f"; not measured in {self.count('not measured')}"
        head = self.verdict + (f" ({c.budget})" if c.budget else "")
        return f"{head}: {counts} ({'; '.join(s.text() for s in self.settings)})"


def _judge_setting(claim: Claim, e: Evidence) -> SettingVerdict:
    if not e.measured:
        return SettingVerdict(e, "not measured")
    if claim.rule == "beats":
        ci = e.interval(BEATS_LEVEL)
        return SettingVerdict(e, "A" if ci.low > 0 else "B" if ci.high < 0 else "neither", ci)
    margin = claim.margin(e)
    ci = e.interval(MATCHES_LEVEL)
    if ci.half_width >= margin:
        outcome = "unreachable"
    elif -margin < ci.low and ci.high < margin:
        outcome = "equivalent"
    elif ci.low >= margin or ci.high <= -margin:
        outcome = "different"
    else:
        outcome = "inconclusive"
    return SettingVerdict(e, outcome, ci, margin)


def judge(claim: Claim, evidence: Sequence[Evidence]) -> Verdict:
    """The claim's verdict from its evidence, one setting at a time, by its one rule (see the module docstring)."""
    if not evidence:
        raise ValueError(f"{claim.statement!r}: no evidence (the rows it reads are missing)")
    settings = tuple(_judge_setting(claim, e) for e in evidence)
    judged = [s for s in settings if s.outcome != "not measured"]
    n, passed, failed = len(judged), sum(s.passes for s in judged), sum(s.fails for s in judged)
    out_of_reach = sum(s.outcome == "unreachable" for s in judged)
    if not judged:
        verdict = "not measured"
    elif passed == n:
        verdict = "holds"
    elif passed:
        behind = "behind" if claim.rule == "beats" else "outside the margin"
        verdict = f"holds in {passed} of {n}, {behind} in {failed}" + (
            f", unreachable in {out_of_reach}" if out_of_reach else "")
    elif failed:
        verdict = "does not hold here"
    elif out_of_reach == n:
        verdict = "unreachable"
    else:
        verdict = "inconclusive here"
    return Verdict(claim, verdict, settings)


def pair_seeds(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray]) -> tuple[np.ndarray, str]:
    """A − B ``[seeds, units]`` from each side's per-seed scores on the same units, and a note on how the seeds were
    paired: B's one seed subtracted from each of A's (and vice versa), the same seeds paired seed by seed, else the
    first min(S_A, S_B) seeds of each in sorted order (said in the note)."""
    sa, sb = sorted(a), sorted(b)
    if not sa or not sb:
        raise ValueError("a paired difference needs at least one seed on each side")
    if len(sb) == 1:
        d, note = [a[s] - b[sb[0]] for s in sa], f"B's one seed against each of A's {len(sa)}" if len(sa) > 1 else ""
    elif len(sa) == 1:
        d, note = [a[sa[0]] - b[s] for s in sb], f"A's one seed against each of B's {len(sb)}"
    elif sa == sb:
        d, note = [a[s] - b[s] for s in sa], ""
    else:
        k = min(len(sa), len(sb))
        d = [a[x] - b[y] for x, y in zip(sa[:k], sb[:k], strict=True)]
        note = f"seeds paired in sorted order: A {sa[:k]} with B {sb[:k]} (A has {sa}, B {sb})"
    return np.stack([np.asarray(x, dtype=float) for x in d]), note


def paired_evidence(setting: str, dataset: str, a: np.ndarray, b: np.ndarray) -> Evidence:
    """A − B from the two rows' scores on the very same units, ``[units]`` or ``[seeds, units]`` each (B may have
    one seed where A has several: it is then subtracted from each)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{setting}: a paired difference needs the same episodes, got {a.shape[-1]} and "
                         f"{b.shape[-1]}")
    return Evidence(setting, dataset, a - b)


# ---------------------------------------------------------------------------------------------------------------------
# The rows the claims read: the results table and every chapter's per-unit scores
# ---------------------------------------------------------------------------------------------------------------------
UNIT_COLUMNS = EPISODE_COLUMNS  # the per-unit files' layout (metalearn.core.results)
OLD_UNIT_COLUMNS = ["method", "dataset", "ways", "shots", "seed", "queries", "data", "episode", "accuracy"]
DRAW = ("episode_seed", "queries", "data")  # what two rows' units must share to pair (with the metric and units)
SETTINGS = [("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5), ("cifar_fs", 5, 1),
            ("cifar_fs", 5, 5)]
BUDGET_COLUMNS = ("train_seconds", "train_steps", "train_examples")
IDENTITY = ("notebook", "method", "dataset", "ways", "shots", "metric", "scale", *QUALIFIERS)  # one row per seed


def label(setting: tuple) -> str:
    """``("omniglot", 5, 1)`` -> ``"omniglot 5w1s"``."""
    dataset, ways, shots = setting
    return f"{dataset} {ways}w{shots}s"


def read_units(path: Path) -> pd.DataFrame:
    """A chapter's per-unit scores (``reports/episodes/<notebook>.csv``) with the columns :data:`UNIT_COLUMNS`, read
    by name: ``seed`` the model's training seed, ``episode_seed`` the seed that drew the test episodes, ``queries``
    (may be empty), ``data`` the test data's digest, ``metric`` ("accuracy" per episode; "roc_auc" or "delta_auprc"
    per assay), ``unit`` the episode or assay index, ``budget`` a checkpoint's training budget (empty for a model
    trained to its end). A file of the old layout (:data:`OLD_UNIT_COLUMNS`, whose ``seed`` was the episodes' seed)
    reads as episode_seed = seed, training seed 0, metric accuracy, unit = episode, value = accuracy; one written
    before the budget column, with an empty budget."""
    t = pd.read_csv(path, dtype={"method": str, "dataset": str, "data": str, "metric": str})
    if list(t.columns) == OLD_UNIT_COLUMNS:
        t = t.rename(columns={"seed": "episode_seed", "episode": "unit", "accuracy": "value"})
        t = t.assign(seed=0, metric="accuracy")
    if "budget" not in t.columns:
        t["budget"] = pd.Series(pd.NA, index=t.index, dtype="Int64")
    missing = [c for c in UNIT_COLUMNS if c not in t.columns]
    if missing:
        raise ValueError(f"{path}: not a per-unit file (missing {missing}; columns {UNIT_COLUMNS})")
    return t[UNIT_COLUMNS]


# (notebook, method, dataset, ways, shots, metric, budget) -> draw (episode_seed, queries, data) -> training seed
# -> scores
Units = dict[tuple, dict[tuple, dict[int, pd.Series]]]


class Results:
    """The results (``table``: reports/results.csv, rows of :func:`metalearn.core.results.row`) and the chapters'
    per-unit scores (``episodes_dir``: reports/episodes/<notebook>.csv), as the claims read them. A table written
    before the budget columns (``train_steps``, ``train_examples``) or the ``budget`` qualifier reads them as <NA>."""

    def __init__(self, table: pd.DataFrame, episodes_dir: Path | None = None, shared_queries: int = 15) -> None:
        table = table.copy()
        for column in (*QUALIFIERS, *BUDGET_COLUMNS, "seed"):  # a table written before a column existed: <NA>
            if column not in table.columns:
                table[column] = pd.NA
        self.table, self.shared = table, f"_transductive_{shared_queries}q"
        # each row's identity (notebook, method, setting, metric, scale, qualifiers) -> its rows' positions, and the
        # rows of the identities asked for (the table is read, never changed)
        self._index: dict[tuple, list[int]] = {}
        self._rows: dict[tuple, pd.DataFrame] = {}
        identity = table[list(IDENTITY)].astype(object).to_numpy()
        for position, values in enumerate(identity):
            self._index.setdefault(tuple(_key(v) for v in values), []).append(position)
        self.units: Units = {}
        for path in sorted(Path(episodes_dir).glob("*.csv")) if episodes_dir else []:
            t = read_units(path)
            for keys, g in t.groupby(["method", "dataset", "ways", "shots", "metric", "budget", *DRAW, "seed"],
                                     dropna=False):
                method, dataset, ways, shots, metric, budget, *draw, seed = (_key(k) for k in keys)
                scores = g.set_index("unit")["value"].sort_index()
                if scores.index.duplicated().any():
                    raise ValueError(f"{path}: {method} {dataset} {ways}w{shots}s seed {seed} repeats a unit")
                self.units.setdefault((path.stem, method, dataset, ways, shots, metric, budget), {}).setdefault(
                    tuple(draw), {})[int(seed)] = scores

    def rows(self, notebook: str, method: str, dataset: str, ways: int | None, shots: int | None,
             metric: str = "accuracy", scale: str = "study", **qualifiers: Any) -> pd.DataFrame:
        """Every training seed's row of ``method`` from ``notebook`` in a setting with exactly the given qualifiers
        (sorted by seed); ``ValueError`` where one seed has two rows."""
        unknown = set(qualifiers) - set(QUALIFIERS)
        if unknown:
            raise TypeError(f"unknown qualifiers {sorted(unknown)}; the qualifiers are {QUALIFIERS}")
        key = tuple(_key(v) for v in (notebook, method, dataset, ways, shots, metric, scale,
                                      *(qualifiers.get(q) for q in QUALIFIERS)))
        if key not in self._rows:
            t = self.table.iloc[self._index.get(key, [])].sort_values("seed")
            if t.seed.duplicated().any():
                raise ValueError(f"two rows of one seed for {notebook} {method} {dataset} {ways}w{shots}s {metric} "
                                 f"{qualifiers}")
            self._rows[key] = t
        return self._rows[key]

    def row(self, notebook: str, method: str, dataset: str, ways: int | None, shots: int | None,
            metric: str = "accuracy", scale: str = "study", **qualifiers: Any) -> pd.Series | None:
        """The row of ``method`` from ``notebook`` in a setting with exactly the given qualifiers, its training seeds
        gathered by :func:`aggregate` (``seeds``: how many), or None."""
        t = self.rows(notebook, method, dataset, ways, shots, metric, scale, **qualifiers)
        return aggregate(t) if len(t) else None

    def group(self, row: pd.Series) -> pd.DataFrame:
        """The training seeds' rows behind ``row`` (a row of the table or of :meth:`row`; a row lacking the metric,
        scale or qualifiers reads them as accuracy, study, none); the row alone where the table has none."""
        q = {name: _key(row[name]) for name in QUALIFIERS if _get(row, name) is not None}
        t = self.rows(str(row["notebook"]), str(row["method"]), str(row["dataset"]), _key(_get(row, "ways")),
                      _key(_get(row, "shots")), str(_get(row, "metric", "accuracy")),
                      str(_get(row, "scale", "study")), **q)
        return t if len(t) else row.to_frame().T

    def budget(self, row: pd.Series) -> Budget:
        return Budget.of(self.group(row))

    def validation(self, test: pd.Series, *models: str) -> pd.Series | None:
        """The validation score the chapter selected the model of ``test`` on: the ``val_<metric>`` rows with the
        same notebook, setting, qualifiers and training seeds (their mean over seeds), under the test row's method id
        or else one of ``models`` (the same model's other ids, e.g. ``maml`` for ``maml_transductive_15q``)."""
        group = self.group(test)
        q = {name: _key(test[name]) for name in QUALIFIERS if _get(test, name) is not None}
        for method in dict.fromkeys((str(test["method"]), *models)):
            t = self.rows(str(test["notebook"]), method, str(test["dataset"]), _key(_get(test, "ways")),
                          _key(_get(test, "shots")), "val_" + str(_get(test, "metric", "accuracy")),
                          str(_get(test, "scale", "study")), **q)
            t = t[t.seed.isin(group.seed)] if "seed" in group.columns else t
            if len(t):
                return aggregate(t)
        return None

    def choose(self, candidates: Sequence[tuple[str, str, str]], setting: tuple, metric: str = "accuracy",
               **qualifiers: Any) -> tuple[pd.Series | None, str, str]:
        """The candidate ``(notebook, method, model)`` whose model scores highest on validation in ``setting`` (among
        those with both a test row and a validation row), its model id, and a note naming the choice and what it was
        made on. ``(None, "", "")`` where no candidate has a test row; ``(None, "", why)`` where none has a
        validation row: not measured (the test rows are never used to choose)."""
        scored, tested = [], []
        for notebook, method, model in candidates:
            dataset, ways, shots = setting
            test = self.row(notebook, method, dataset, ways, shots, metric, **qualifiers)
            if test is None:
                continue
            tested.append(method)
            val = self.validation(test, model)
            if val is not None:
                scored.append((float(val["value"]), test, model))
        if not tested:
            return None, "", ""
        if not scored:
            return None, "", f"no val_{metric} row for {', '.join(tested)}: the best cannot be chosen on validation"
        best, test, model = max(scored, key=lambda x: x[0])
        others = ", ".join(f"{t['method']} {_num(v)}" for v, t, _ in scored if t is not test)
        return test, model, (f"{test['method']} chosen on val_{metric} {_num(best)}" + (f" over {others}" if others
                                                                                       else ", the only one with it"))

    def _draws(self, row: pd.Series) -> dict[tuple, dict[int, pd.Series]]:
        """The row's per-unit scores by draw and training seed (its seeds only); none for a row with a qualifier
        other than ``budget`` (the per-unit files tell rows apart by their budget, not by the other qualifiers)."""
        if any(_get(row, q) is not None for q in QUALIFIERS if q != "budget"):
            return {}
        key = tuple(_key(_get(row, c)) for c in ("notebook", "method", "dataset", "ways", "shots"))
        draws = self.units.get((*key, _get(row, "metric", "accuracy"), _key(_get(row, "budget"))), {})
        group = self.group(row)
        seeds = {int(s) for s in group.seed.dropna()} if "seed" in group.columns else set()
        return {draw: kept for draw, by_seed in draws.items()
                if (kept := {s: x for s, x in by_seed.items() if not seeds or s in seeds})}

    def pairing(self, a: pd.Series, b: pd.Series) -> tuple[np.ndarray, str] | None:
        """A − B ``[seeds, units]`` and :func:`pair_seeds`'s note where both rows' chapters scored the very same units
        (equal episode seed, queries, test data and metric, <NA> equal to <NA>; the same units), else None."""
        da, db = self._draws(a), self._draws(b)
        for draw in sorted(set(da) & set(db), key=repr):
            sides = (da[draw], db[draw])
            if len({tuple(x.index) for side in sides for x in side.values()}) == 1:
                return pair_seeds(*({s: x.to_numpy() for s, x in side.items()} for side in sides))
        return None

    def evidence(self, setting: str, a: pd.Series, b: pd.Series, *, lower_is_better: bool = False, note: str = "",
                 reference: float | None = None) -> Evidence:
        """A − B for two rows (B − A where ``lower_is_better``, e.g. MSE, so that a positive difference is A better),
        paired where :meth:`pairing` pairs them, else unpaired (:func:`unpaired`), with both sides' budgets."""
        first, second = (b, a) if lower_is_better else (a, b)
        budgets = (self.budget(a),), (self.budget(b),)
        pairing = self.pairing(first, second)
        if pairing is not None:
            differences, how = pairing
            return Evidence(setting, str(a["dataset"]), differences, a=budgets[0], b=budgets[1],
                            note="; ".join(x for x in (note, how) if x), reference=reference)
        return Evidence(setting, str(a["dataset"]), paired=False, unpaired=unpaired(first, second), a=budgets[0],
                        b=budgets[1], note=note, reference=reference)

    def gradient_row(self, method: str, setting: tuple) -> pd.Series | None:
        """A gradient-based method's row on the shared test episodes (transductive BN), where its chapter wrote
        one: the row that pairs with the other families'."""
        return self.row(home(method), method + self.shared, *setting)

    def versus_baseline(self, setting: str, row: pd.Series, model: str, notebook: str = "00_background",
                        note: str = "", baseline: str = "pretrain_finetune", **qualifiers: Any) -> Evidence:
        """``row`` − a pre-trained baseline (``baseline``: fine-tuning, or ``nearest_centroid``) at the same BatchNorm
        protocol: the baseline's row whose id carries the same suffix as ``row``'s after its ``model`` id
        (``maml_transductive_15q`` against ``pretrain_finetune_transductive_15q``, ``protonet`` against
        ``pretrain_finetune``); not measured where ``notebook`` has no such row (protocols are never mixed)."""
        if not str(row["method"]).startswith(model):
            raise ValueError(f"{row['method']} is not a row of the model {model}")
        suffix = str(row["method"])[len(model):]
        base = self.row(notebook, baseline + suffix, str(row["dataset"]), _key(_get(row, "ways")),
                        _key(_get(row, "shots")), **qualifiers)
        if base is None:
            return Evidence(setting, str(row["dataset"]), a=(self.budget(row),), note=note,
                            missing=f"no {baseline}{suffix} row in {notebook}, the same BatchNorm protocol as "
                                    f"{row['method']}")
        return self.evidence(setting, row, base, note=note)


def home(method: str) -> str:
    """The chapter whose rows are a catalogued method's main rows."""
    return papers.METHODS[method].notebook


# ---------------------------------------------------------------------------------------------------------------------
# The deck's claims: each a Claim and the function that gathers its evidence from the results
# ---------------------------------------------------------------------------------------------------------------------
FAMILY_OF = {"metric-based": ("siamese", "relation_net", "matching_net", "protonet", "meta_gnn"),
             "model-based": ("mann", "meta_net", "hypernet"),
             "gradient-based": ("maml", "fomaml", "reptile", "anil")}
SUMMARY, DRUGS = "14_summary", "13_drug_discovery"
META_INITS = ("maml", "fomaml", "anil", "protonet")  # chapter 13's meta-initialisations
MOLECULENET = ("tox21", "sider", "muv", "toxcast")
JOINT = ("11_reptile", "joint", {"inner_steps": 0})  # Reptile's chapter's joint training (no inner steps)
Gather = Callable[[Results], list[Evidence]]


def _distinct(t: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """The distinct rows of ``t[columns]``, sorted (<NA> last), as tuples of keys (<NA> as None)."""
    return [tuple(_key(x) for x in row) for row in t[columns].drop_duplicates().sort_values(columns).to_numpy()]


def family_candidates(r: Results, family: str, notebook: str | None = None) -> list[tuple[str, str, str]]:
    """``(notebook, method, model)`` for each method of a family: its home chapter's main row (``notebook``'s
    instead where given), a gradient-based method's row on the shared episodes (transductive BN)."""
    shared = r.shared if family == "gradient-based" else ""
    return [(notebook or home(m), m + shared, m) for m in FAMILY_OF[family]]


def _family_vs_baseline(r: Results, family: str) -> list[Evidence]:
    """The family's method chosen on validation in each setting − pre-training + fine-tuning (chapter 00) at the
    same BatchNorm protocol."""
    out = []
    for s in SETTINGS:
        best, model, note = r.choose(family_candidates(r, family), s)
        if best is not None:
            out.append(r.versus_baseline(f"{label(s)} ({best['method']})", best, model, note=note))
        elif note:
            out.append(Evidence(label(s), s[0], missing=note))
    return out


# Each family's representative at equal compute: checkpoints of one run per training seed at nominal budgets (seconds
# on the study's machine; the steps at the method's stated pace are the deterministic unit), written by its chapter
# on CIFAR-FS 5w1s's shared test episodes, against chapter 00's pre-training checkpoints at the same budgets.
REPRESENTATIVE = {"metric-based": "protonet", "model-based": "hypernet", "gradient-based": "maml"}


def _equal_compute(r: Results, family: str) -> list[Evidence]:
    """The family's representative − pre-training + fine-tuning at each equal training budget (the rows with the
    ``budget`` qualifier in the representative's chapter and in chapter 00), at the same BatchNorm protocol and on
    the same test episodes: paired over training seeds and episodes."""
    method = REPRESENTATIVE[family]
    rows_of = method + (r.shared if family == "gradient-based" else "")
    t = r.table
    t = t[(t.notebook == home(method)) & (t.method == rows_of) & t.budget.notna() & (t.metric == "accuracy")
          & (t.scale == "study")]
    out = []
    for dataset, ways, shots, budget in _distinct(t, ["dataset", "ways", "shots", "budget"]):
        row = r.row(home(method), rows_of, dataset, ways, shots, budget=budget)
        if row is not None:
            out.append(r.versus_baseline(f"{label((dataset, ways, shots))} at {budget:,} s ({method})", row, method,
                                         budget=budget))
    return out


def _pairs(r: Results, a: tuple[str, str], b: tuple[str, str], settings: Sequence[tuple] = SETTINGS
           ) -> list[Evidence]:
    """A − B in each setting for two (notebook, method) rows."""
    out = []
    for s in settings:
        ra, rb = r.row(*a, *s), r.row(*b, *s)
        if ra is not None and rb is not None:
            out.append(r.evidence(label(s), ra, rb))
    return out


def _shared_pairs(r: Results, a: str, b: str) -> list[Evidence]:
    """A − B for two gradient-based methods on the shared episodes (transductive BN), paired."""
    out = []
    for s in SETTINGS:
        ra, rb = r.gradient_row(a, s), r.gradient_row(b, s)
        if ra is not None and rb is not None:
            out.append(r.evidence(label(s), ra, rb))
    return out


def _maml_vs_pretraining(r: Results) -> list[Evidence]:
    """MAML on the shared episodes (transductive BN) − pre-training + fine-tuning's transductive row."""
    return [r.versus_baseline(label(s), a, "maml") for s in SETTINGS if (a := r.gradient_row("maml", s)) is not None]


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
    """For each shifted row of a metric-based chapter (a model trained on ``trained_on``, tested on another data
    set): its drop (the home model's accuracy − the shifted model's) − pre-training + fine-tuning's drop under the
    same shift (chapter 00's rows with ``trained_on``); unpaired, the four rows' intervals combined."""
    t = r.table
    notebooks = {home(m) for m in FAMILY_OF["metric-based"]}
    shifted = t[t.notebook.isin(notebooks) & t.trained_on.notna() & (t.metric == "accuracy") & (t.scale == "study")]
    out = []
    for notebook, method, source, dataset, ways, shots in _distinct(
            shifted, ["notebook", "method", "trained_on", "dataset", "ways", "shots"]):
        s = (dataset, ways, shots)
        moved, stay = r.row(notebook, method, *s, trained_on=source), r.row(notebook, method, *s)
        if moved is None or stay is None:
            continue
        setting = f"{method} {source}→{dataset} {ways}w{shots}s"
        b_stay = r.row("00_background", "pretrain_finetune", *s)
        b_moved = r.row("00_background", "pretrain_finetune", *s, trained_on=source)
        a = (r.budget(stay), r.budget(moved))
        if b_stay is None or b_moved is None:
            out.append(Evidence(setting, str(dataset), a=a, missing=f"no pretrain_finetune rows in 00_background "
                                                                    f"trained on {source} and on {dataset}"))
            continue
        out.append(Evidence(setting, str(dataset), paired=False, a=a, b=(r.budget(b_stay), r.budget(b_moved)),
                            unpaired=combine([(stay, 1.0), (moved, -1.0), (b_stay, -1.0), (b_moved, 1.0)])))
    return out


def _mann(r: Results) -> list[Evidence]:
    a = r.row("06_mann", "mann", "omniglot", 5, None, "instance_accuracy", instance=2)
    b = r.row("06_mann", "lstm", "omniglot", 5, None, "instance_accuracy", instance=2)
    out = [r.evidence("2nd instance", a, b)] if a is not None and b is not None else []
    return out + _pairs(r, ("06_mann", "mann"), ("06_mann", "lstm"), [("omniglot", 5, 1), ("omniglot", 5, 5)])


def _static_hypernet(r: Results) -> list[Evidence]:
    """Every compression level of the static hypernetwork in every setting it has rows in − chapter 08's ProtoNet."""
    out = []
    for s in SETTINGS:
        for method in ("hypernet_static", "hypernet_static_z16", "hypernet_static_z4"):
            a, b = (r.row("08_hypernetworks", m, *s) for m in (method, "protonet"))
            if a is not None and b is not None:
                out.append(r.evidence(f"{label(s)} {method}", a, b))
    return out


def _sinusoid(r: Results, a: tuple[str, str, dict], b: tuple[str, str, dict], steps: Sequence[int] = (1, 10)
              ) -> list[Evidence]:
    """B − A in MSE (lower is better, so a positive difference is A better) after each number of test steps, with
    B's MSE as the reference of a relative margin."""
    out = []
    for k in steps:
        ra = r.row(a[0], a[1], "sinusoid", None, 5, "mse", adapt_steps=k, **a[2])
        rb = r.row(b[0], b[1], "sinusoid", None, 5, "mse", adapt_steps=k, **b[2])
        if ra is not None and rb is not None:
            out.append(r.evidence(f"MSE after {k} step{'s' if k > 1 else ''}", ra, rb, lower_is_better=True,
                                  reference=float(rb["value"])))
    return out


def _drugs(r: Results, dataset: str, metric: str, sizes: Sequence[tuple[int | None, int | None]]) -> list[Evidence]:
    """The meta-initialisation chosen on validation (``val_<metric>``) − multitask fine-tuning on new assays, paired
    per assay where chapter 13 wrote its per-assay scores, else unpaired."""
    out = []
    for ways, shots in sizes:
        mt = r.row(DRUGS, "multitask_finetune", dataset, ways, shots, metric)
        best, _, note = r.choose([(DRUGS, m, m) for m in META_INITS], (dataset, ways, shots), metric)
        if mt is None:
            continue
        if best is not None:
            out.append(r.evidence(f"{dataset} k={shots} ({best['method']})", best, mt, note=note))
        elif note:
            out.append(Evidence(f"{dataset} k={shots}", dataset, missing=note))
    return out


def _fsmol(r: Results) -> list[Evidence]:
    t = r.table
    shots = t[(t.dataset == "fsmol") & (t.method == "multitask_finetune") & (t.metric == "delta_auprc")].shots
    return _drugs(r, "fsmol", "delta_auprc", [(None, int(k)) for k in sorted(shots.dropna().unique())])


def _moleculenet(r: Results) -> list[Evidence]:
    return [e for d in MOLECULENET for e in _drugs(r, d, "roc_auc", [(2, 10)])]


CLAIMS: list[tuple[Claim, Gather]] = [
    *[(Claim("00", f"{family.capitalize()} meta-learning beats pre-training + fine-tuning", f"best {family}",
             "pre-train + fine-tune", "beats", "the family's method chosen on validation vs pretrain_finetune at the "
             "same BatchNorm protocol, six settings"), partial(_family_vs_baseline, family=family))
      for family in FAMILY_OF],
    *[(Claim("14", f"At equal training seconds, {family} meta-learning beats pre-training + fine-tuning",
             f"{REPRESENTATIVE[family]} at budget", "pre-train + fine-tune at budget", "beats",
             f"checkpoints of {REPRESENTATIVE[family]} ({home(REPRESENTATIVE[family])[:2]}) and pre-training (00) at "
             "each nominal budget (budget qualifier), paired over seeds and shared episodes", "equal seconds"),
       partial(_equal_compute, family=family)) for family in FAMILY_OF],
    (Claim("04", "Training with more ways than at test time gives better embeddings", "60-way ProtoNet",
           "5-way ProtoNet", "beats", "60-way vs 5-way training, at equal episodes and at equal images"), _more_ways),
    (Claim("01–05", "Metric-based models lose more under task shift than pre-trained features",
           "metric-based model's drop", "pre-train + fine-tune's drop", "beats",
           "home − shifted accuracy of each shifted metric-based row vs chapter 00's under the same shift"),
     _task_shift),
    (Claim("03", "Full Context Embeddings improve Matching Networks", "FCE", "simple embedding", "beats",
           "FCE vs simple embedding, six settings"),
     partial(_pairs, a=("03_matching_network", "matching_net_fce"), b=("03_matching_network", "matching_net"))),
    (Claim("06", "A memory-augmented network (MANN) beats an LSTM at one-shot recall", "MANN", "LSTM", "beats",
           "Santoro's 2nd-instance accuracy and the shared 5-way episodes"), _mann),
    (Claim("08", "A task-conditioned hypernetwork can generate the classifier from the support set", "hypernet",
           "ProtoNet (04)", "matches", "hypernetwork (08) vs ProtoNet's home rows (04), six settings"),
     partial(_pairs, a=("08_hypernetworks", "hypernet"), b=(home("protonet"), "protonet"))),
    (Claim("08", "A static hypernetwork compresses the network at little cost", "static hypernet", "ProtoNet",
           "matches", "generated Conv-4 kernels (z = 64 / 16 / 4) vs 08's ProtoNet, every setting with rows"),
     _static_hypernet),
    (Claim("09", "MAML beats pre-training on all tasks (sinusoid regression)", "MAML", "pre-trained", "beats",
           "MSE after 1 and 10 SGD steps on K = 5 points (lower is better)"),
     partial(_sinusoid, a=("09_maml", "maml", {}), b=("09_maml", "pretrained", {}))),
    (Claim("09", "MAML beats pre-training + fine-tuning on few-shot classification", "MAML",
           "pre-train + fine-tune", "beats", "MAML (09, shared episodes, transductive BN) vs chapter 00's "
           "transductive row"), _maml_vs_pretraining),
    (Claim("10", "First-order MAML matches MAML at little cost in accuracy", "FOMAML", "MAML", "matches",
           "FOMAML vs MAML, shared episodes, transductive BN", "equal meta-steps"),
     partial(_shared_pairs, a="fomaml", b="maml")),
    (Claim("11", "Reptile with k = 1 is joint training", "Reptile k = 1", "joint training", "matches",
           "sinusoid MSE after 1 and 10 test steps", relative_margin=stats.SINUSOID_RELATIVE_MARGIN),
     partial(_sinusoid, a=("11_reptile", "reptile", {"inner_steps": 1}), b=JOINT)),
    (Claim("11", "Reptile with k > 1 beats joint training", "Reptile k = 5", "joint training", "beats",
           "sinusoid MSE after 1 and 10 test steps (lower is better)"),
     partial(_sinusoid, a=("11_reptile", "reptile", {"inner_steps": 5}), b=JOINT)),
    (Claim("11", "Reptile performs like first-order MAML", "Reptile", "FOMAML", "matches",
           "Reptile (11) vs FOMAML (10), shared episodes, transductive BN", "about equal seconds"),
     partial(_shared_pairs, a="reptile", b="fomaml")),
    (Claim("12", "ANIL matches MAML with a much cheaper meta-step", "ANIL", "MAML", "matches",
           "ANIL vs MAML, shared episodes, transductive BN", "equal meta-steps"),
     partial(_shared_pairs, a="anil", b="maml")),
    (Claim("13", "Meta-initialisations beat multitask pre-training + fine-tuning on new assays (FS-Mol)",
           "best meta-initialisation", "multitask fine-tuning", "beats",
           "FS-Mol test assays, ΔAUPRC, paired per assay; the meta-initialisation chosen on val_delta_auprc"), _fsmol),
    (Claim("13", "…and on the MoleculeNet few-shot sets", "best meta-initialisation", "multitask fine-tuning",
           "beats", "Tox21, SIDER, MUV, ToxCast, 10 + 10 support, ROC-AUC, paired per assay; chosen on val_roc_auc"),
     _moleculenet),
]


def _sides(settings: Sequence[SettingVerdict], side: str) -> tuple[str, str]:
    """One side's budgets over a claim's settings as one compact string (once where every setting's is the same),
    and its number of seeds ("1", "3" or "1–3")."""
    per = [(s.setting, getattr(s.evidence, side)) for s in settings if getattr(s.evidence, side)]
    texts = [(where, " + ".join(b.text() for b in budgets)) for where, budgets in per]
    distinct = list(dict.fromkeys(text for _, text in texts))
    budget = distinct[0] if len(distinct) == 1 else "; ".join(f"{where}: {text}" for where, text in texts)
    counts = sorted({len(b.seeds) for _, budgets in per for b in budgets})
    seeds = "–" if not counts else f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return budget or "–", seeds


def judge_all(r: Results) -> pd.DataFrame:
    """Every claim of :data:`CLAIMS` judged on ``r``: one row per claim with its chapter, statement, experiment,
    rule, verdict, margin (a matches claim's), both sides' budgets (compact) and seeds, the verdict's sentence
    (every setting's estimate and budgets) and, where settings are not measured, their distinct reasons
    (``missing``); a claim whose rows are missing reads "not measured"."""
    records = []
    for claim, gather in CLAIMS:
        evidence = gather(r)
        budget_a = budget_b = seeds_a = seeds_b = "–"
        missing = "; ".join(dict.fromkeys(e.missing for e in evidence if e.missing)) or (
            "" if evidence else "its rows are not in results.csv")
        if evidence:
            v = judge(claim, evidence)
            verdict, sentence = v.verdict, v.sentence()
            (budget_a, seeds_a), (budget_b, seeds_b) = _sides(v.settings, "a"), _sides(v.settings, "b")
        else:
            verdict, sentence = "not measured", "its rows are not in results.csv"
        records.append({"chapter": claim.chapter, "claim": claim.statement, "experiment": claim.experiment,
                        "rule": claim.rule, "verdict": verdict, "margin": claim.margin_text(), "budget_a": budget_a,
                        "budget_b": budget_b, "seeds_a": seeds_a, "seeds_b": seeds_b, "evidence": sentence,
                        "missing": missing})
    return pd.DataFrame(records)


def verdict_kind(verdict: str) -> str:
    """The kind of a verdict (:data:`VERDICTS`): "holds in 3 of 6, behind in 2" -> "holds in k of n"."""
    kind = "holds in k of n" if verdict.startswith("holds in ") else verdict
    if kind not in VERDICTS:
        raise ValueError(f"not a verdict: {verdict!r}")
    return kind


def count_verdicts(verdicts: pd.DataFrame | Iterable[str]) -> dict[str, int]:
    """How many claims got each kind of verdict, in the order of :data:`VERDICTS` (zeros included), from
    :func:`judge_all`'s table or its verdict strings: what the summary chapter renders its prose from."""
    values = verdicts["verdict"] if isinstance(verdicts, pd.DataFrame) else verdicts
    counts = dict.fromkeys(VERDICTS, 0)
    for v in values:
        counts[verdict_kind(str(v))] += 1
    return counts
