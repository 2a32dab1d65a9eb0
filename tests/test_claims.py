"""The claims' rules and the rows they read, on synthetic rows: a case per rule or choice that flips its verdict."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from metalearn.core import stats
from metalearn.study import claims
from metalearn.study.claims import Claim, Evidence, Unpaired, judge, paired_evidence

RNG = np.random.default_rng(0)
# the results schema the claims read (core.results.COLUMNS with the budget columns and the budget qualifier)
COLUMNS = ["notebook", "method", "variant", "trained_on", "dataset", "ways", "shots", "adapt_steps", "meta_batch",
           "inner_steps", "instance", "budget", "metric", "value", "ci95", "n_test", "scale", "train_seconds",
           "train_steps", "train_examples", "device", "seed"]
INTS = ("ways", "shots", "adapt_steps", "meta_batch", "inner_steps", "instance", "budget", "n_test", "train_steps",
        "train_examples", "seed")
UNIT_COLUMNS = ["method", "dataset", "ways", "shots", "seed", "budget", "episode_seed", "queries", "data", "metric",
                "unit", "value"]
OMNIGLOT, CIFAR = ("omniglot", 5, 1), ("cifar_fs", 5, 1)


@pytest.fixture(autouse=True)
def _fresh_rng() -> None:
    """Every test draws the same numbers whichever tests ran before it (mutation testing runs subsets)."""
    global RNG
    RNG = np.random.default_rng(0)


def _episodes(mean: float, sd: float = 8.0, n: int = 600) -> np.ndarray:
    x = RNG.normal(0, sd, n)
    return x - x.mean() + mean


def _claim(rule: str, **kw) -> Claim:
    return Claim("10", "A vs B", "A", "B", rule, "six settings", **kw)


def _row(notebook: str, method: str, setting: tuple = OMNIGLOT, value: float = 90.0, *, ci95: float | None = 0.5,
         n_test: int | None = 600, metric: str = "accuracy", seed: int = 0, seconds: float | None = 60.0,
         steps: int | None = 1000, examples: int | None = 32000, **qualifiers) -> dict:
    """A results row with every column (the qualifiers not given empty)."""
    dataset, ways, shots = setting
    row = dict.fromkeys(COLUMNS)
    row.update(notebook=notebook, method=method, dataset=dataset, ways=ways, shots=shots, metric=metric, value=value,
               ci95=ci95, n_test=n_test, scale="study", train_seconds=seconds, train_steps=steps,
               train_examples=examples, device="cpu", seed=seed, **qualifiers)
    return row


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS).astype({c: "Int64" for c in INTS})


def _units(method: str, values, setting: tuple = OMNIGLOT, *, seed: int = 0, episode_seed: int = 0,
           queries: int | None = 15, data: str = "d0", metric: str = "accuracy", first: int = 0,
           budget: int | None = None) -> list[dict]:
    """A per-unit file's rows: one per test unit (episode or assay)."""
    dataset, ways, shots = setting
    return [dict(method=method, dataset=dataset, ways=ways, shots=shots, seed=seed, budget=budget,
                 episode_seed=episode_seed,
                 queries=queries, data=data, metric=metric, unit=first + i, value=float(v))
            for i, v in enumerate(values)]


def _results(tmp_path: Path, rows: list[dict], units: dict[str, list[dict]] | None = None) -> claims.Results:
    folder = tmp_path / "episodes"
    folder.mkdir(parents=True, exist_ok=True)
    for notebook, unit_rows in (units or {}).items():
        pd.DataFrame(unit_rows, columns=UNIT_COLUMNS).to_csv(folder / f"{notebook}.csv", index=False)
    return claims.Results(_table(rows), folder)


def _gather(statement: str):
    """The evidence-gathering function of the catalogued claim whose statement starts with ``statement``."""
    found = [(c, g) for c, g in claims.CLAIMS if c.statement.startswith(statement)]
    assert len(found) == 1, statement
    return found[0]


# ---------------------------------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------------------------------
def test_beats_holds_in_every_setting_in_some_or_in_none():
    ahead = [Evidence("omniglot 5w1s", "omniglot", _episodes(2)), Evidence("omniglot 5w5s", "omniglot", _episodes(1.5))]
    v = judge(_claim("beats"), ahead)
    assert v.verdict == "holds" and v.passed == 2
    assert v.sentence().startswith("holds: A ahead in 2 of 2, behind in 0, not distinguishable in 0 (omniglot 5w1s")
    mixed = [ahead[0], Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(0.1))]
    assert judge(_claim("beats"), mixed).verdict == "holds in 1 of 2, behind in 0"
    # a partial win says in how many settings B is significantly ahead
    three = [*mixed, Evidence("cifar_fs 5w5s", "cifar_fs", _episodes(-2))]
    assert judge(_claim("beats"), three).verdict == "holds in 1 of 3, behind in 1"
    behind = [Evidence("omniglot 5w1s", "omniglot", _episodes(-2)), Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(0))]
    v = judge(_claim("beats"), behind)
    assert v.verdict == "does not hold here" and "behind in 1, not distinguishable in 1" in v.sentence()
    assert [s.outcome for s in v.settings] == ["B", "neither"] and [s.fails for s in v.settings] == [True, False]
    assert judge(_claim("beats"), [behind[1]]).verdict == "inconclusive here"


def test_beats_is_judged_on_the_95_percent_interval():
    """A difference whose 80% (or 90%) interval excludes 0 but whose 95% one does not is no win."""
    x = RNG.normal(0, 8, 600)
    x = (x - x.mean()) / x.std(ddof=1) * 8
    half95 = sps.t.ppf(0.975, 599) * 8 / np.sqrt(600)
    v = judge(_claim("beats"), [Evidence("omniglot 5w1s", "omniglot", x + 0.9 * half95)])
    assert v.verdict == "inconclusive here" and v.settings[0].outcome == "neither"
    assert v.settings[0].interval.level == 0.95 and "(95% CI" in v.sentence()
    assert v.settings[0].interval.half_width == pytest.approx(half95)
    assert judge(_claim("beats"), [Evidence("omniglot 5w1s", "omniglot", x + 1.1 * half95)]).verdict == "holds"
    assert judge(_claim("beats"), [Evidence("omniglot 5w1s", "omniglot", x - 1.1 * half95)]).settings[0].outcome == "B"


def test_a_second_training_seed_that_disagrees_undoes_a_win():
    one_seed = paired_evidence("omniglot 5w1s", "omniglot", _episodes(75.0)[None], _episodes(74.0, sd=0.1)[None])
    assert judge(_claim("beats"), [one_seed]).verdict == "holds"
    episodes = _episodes(74.0, sd=0.1)
    seeds = np.stack([episodes + 1.0 + RNG.normal(0, 8, 600), episodes - 2.0 + RNG.normal(0, 8, 600),
                      episodes + 3.0 + RNG.normal(0, 8, 600)])
    three = paired_evidence("omniglot 5w1s", "omniglot", seeds, episodes)
    assert three.differences.shape == (3, 600)
    v = judge(_claim("beats"), [three])
    assert v.verdict == "inconclusive here" and v.settings[0].interval.seeds == 3
    assert "paired over 600 units × 3 seeds" in v.sentence()


def test_matches_needs_equivalence_not_a_ci_that_covers_zero():
    close = [Evidence("omniglot 5w1s", "omniglot", _episodes(0.2)),
             Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(-0.5))]
    v = judge(_claim("matches"), close)
    assert v.verdict == "holds" and all(s.outcome == "equivalent" for s in v.settings)
    assert all(s.interval.level == pytest.approx(0.9) for s in v.settings)
    assert [s.margin for s in v.settings] == [1.0, 2.0] and "margin ±1.00" in v.sentence()
    # fewer, noisier episodes: the interval covers 0 but also the margin, so no match is read from it
    noisy = [Evidence("omniglot 5w1s", "omniglot", _episodes(0.6, sd=4.8, n=100)),
             Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(-1.2, sd=9.6, n=100))]
    v = judge(_claim("matches"), noisy)
    assert v.verdict == "inconclusive here" and {s.outcome for s in v.settings} == {"inconclusive"}
    far = [Evidence("omniglot 5w1s", "omniglot", _episodes(-3.0)), Evidence("omniglot 5w5s", "omniglot", _episodes(3))]
    assert [s.outcome for s in judge(_claim("matches"), far).settings] == ["different", "different"]
    assert judge(_claim("matches"), far).verdict == "does not hold here"
    assert judge(_claim("matches"), [close[0], far[0]]).verdict == "holds in 1 of 2, outside the margin in 1"
    # a wider margin the claim states turns the same evidence into a match
    assert judge(_claim("matches", margins={"omniglot": 4.0}), far).verdict == "holds"


def test_matches_is_a_90_percent_interval_inside_the_margin():
    """TOST at 5%: a 90% interval inside the margin is a match even where the 95% one is not."""
    x = RNG.normal(0, 8, 600)
    x = (x - x.mean()) / x.std(ddof=1) * 8
    se = 8 / np.sqrt(600)
    margin = 0.2 + se * (sps.t.ppf(0.95, 599) + sps.t.ppf(0.975, 599)) / 2  # between the 90% and 95% upper ends
    v = judge(_claim("matches", margins={"omniglot": margin}), [Evidence("omniglot 5w1s", "omniglot", x + 0.2)])
    assert v.verdict == "holds" and v.settings[0].interval.half_width == pytest.approx(sps.t.ppf(0.95, 599) * se)
    # exactly on the margin is not inside it
    e = Evidence("omniglot 5w1s", "omniglot", x + 0.2)
    on = judge(_claim("matches", margins={"omniglot": e.interval(0.9).high}), [e])
    assert on.settings[0].outcome == "inconclusive"
    on = judge(_claim("matches", margins={"omniglot": e.interval(0.9).high}), [Evidence("s", "omniglot", -x - 0.2)])
    assert on.settings[0].outcome == "inconclusive"


def test_a_margin_out_of_reach_is_unreachable_never_a_pass_nor_different():
    wide = Evidence("omniglot 5w1s", "omniglot", _episodes(0.0, sd=8, n=40))  # 90% half-width ≈ 2.1 > ±1
    v = judge(_claim("matches"), [wide])
    s = v.settings[0]
    assert s.outcome == "unreachable" and not s.passes and not s.fails and v.verdict == "unreachable"
    assert s.interval.half_width >= 1.0
    assert f"the margin ±1.00 cannot be met with 40 units (half-width {s.interval.half_width:.2f}" in v.sentence()
    assert "unreachable in 1" in v.sentence()
    # even far from 0: a half-width at the margin cannot tell, and it is not counted as "different"
    far = Evidence("omniglot 5w5s", "omniglot", _episodes(-5.0, sd=8, n=40))
    assert judge(_claim("matches"), [far]).settings[0].outcome == "unreachable"
    # a half-width exactly at the margin is out of reach too
    exact = Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=Unpaired(0.0, 1.0 / sps.norm.ppf(0.95), None))
    assert judge(_claim("matches"), [exact]).settings[0].outcome == "unreachable"
    close = Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(0.2))
    assert judge(_claim("matches"), [wide, close]).verdict == \
        "holds in 1 of 2, outside the margin in 0, unreachable in 1"
    assert judge(_claim("matches"), [wide, Evidence("omniglot 5w1s", "omniglot", _episodes(0.6, sd=4.8, n=100))]
                 ).verdict == "inconclusive here"
    assert judge(_claim("matches"), [wide, Evidence("omniglot 5w5s", "omniglot", _episodes(-3.0))]).verdict == \
        "does not hold here"


def test_a_relative_margin_is_a_fraction_of_bs_value():
    claim = _claim("matches", relative_margin=0.1)
    e = Evidence("MSE after 1 step", "sinusoid", paired=False, unpaired=Unpaired(0.05, 0.01, 1000.0, 600),
                 reference=-2.0)
    s = judge(claim, [e]).settings[0]
    assert s.margin == pytest.approx(0.2) and s.outcome == "equivalent"
    assert claim.margin_text() == "±10% of B" and _claim("beats").margin_text() == ""
    assert _claim("matches").margin_text() == "±1 (omniglot), ±2 (cifar_fs)"
    with pytest.raises(ValueError, match="relative margin needs B's value"):
        judge(claim, [Evidence("MSE", "sinusoid", paired=False, unpaired=Unpaired(0.0, 0.01, 100.0))])


def test_not_measured_settings_are_counted_apart():
    missing = Evidence("omniglot 5w1s", "omniglot", missing="no val_accuracy row")
    v = judge(_claim("beats"), [missing])
    assert v.verdict == "not measured" and v.settings[0].interval is None and not v.settings[0].passes
    assert v.sentence() == "not measured: no setting measured of 1 (omniglot 5w1s: not measured (no val_accuracy row))"
    v = judge(_claim("beats"), [missing, Evidence("omniglot 5w5s", "omniglot", _episodes(2))])
    assert v.verdict == "holds" and "A ahead in 1 of 1" in v.sentence() and "not measured in 1" in v.sentence()
    with pytest.raises(ValueError, match="not measured"):
        missing.interval()


# ---------------------------------------------------------------------------------------------------------------------
# Unpaired intervals: t with Welch–Satterthwaite's degrees of freedom
# ---------------------------------------------------------------------------------------------------------------------
def test_unpaired_rows_combine_with_welch_satterthwaite_t():
    a, b = pd.Series(_row("x", "a", value=70.0, ci95=1.0, n_test=600)), pd.Series(_row("x", "b", value=68.0, ci95=2.0,
                                                                                         n_test=10))
    se_a, se_b = 1.0 / sps.t.ppf(0.975, 599), 2.0 / sps.t.ppf(0.975, 9)
    df = (se_a ** 2 + se_b ** 2) ** 2 / (se_a ** 4 / 599 + se_b ** 4 / 9)
    u = claims.unpaired(a, b)
    assert (u.mean, u.n) == (2.0, 10)
    assert u.se == pytest.approx(np.hypot(se_a, se_b)) and u.df == pytest.approx(df)
    for level in (0.95, 0.90, 0.8):
        ci = u.interval(level)
        assert ci.half_width == pytest.approx(sps.t.ppf(0.5 + level / 2, df) * u.se) and ci.level == level
        assert ci.df == pytest.approx(df) and ci.n == 10
    # t with 16 degrees of freedom, not the normal quantile
    assert u.interval().half_width == pytest.approx(2.1636, abs=1e-4)
    assert u.interval().half_width > sps.norm.ppf(0.975) * u.se
    assert claims.standard_error(b) == (pytest.approx(se_b), 9.0, 10)


def test_unpaired_falls_back_to_the_normal_quantile_without_n_test_and_says_so():
    a = pd.Series(_row("x", "a", value=70.0, ci95=1.0, n_test=None))
    b = pd.Series(_row("x", "b", value=69.0, ci95=1.0, n_test=600))
    u = claims.unpaired(a, b)
    assert u.df is None and u.se == pytest.approx(np.hypot(1 / sps.norm.ppf(0.975), 1 / sps.t.ppf(0.975, 599)))
    assert u.interval(0.9).half_width == pytest.approx(sps.norm.ppf(0.95) * u.se)
    assert math.isinf(u.interval().df)
    v = judge(_claim("beats"), [Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=u)])
    assert "unpaired, normal quantile: n_test unknown" in v.sentence()
    # no interval at all: an infinite error, never a win
    none = claims.unpaired(pd.Series(_row("x", "a", value=99.0, ci95=None)), b)
    assert math.isinf(none.se) and judge(_claim("beats"), [
        Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=none)]).verdict == "inconclusive here"
    assert claims.standard_error(pd.Series(_row("x", "a", ci95=0.5, n_test=1)))[1] is None


def test_unpaired_rows_are_judged_on_their_combined_interval_and_say_so():
    e = Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=Unpaired(2.0, 0.5, 1000.0, 600))
    v = judge(_claim("beats"), [e])
    assert v.verdict == "holds" and "unpaired, Welch df 1000" in v.sentence()
    weak = Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=Unpaired(0.5, 0.5, 1000.0, 600))
    assert judge(_claim("beats"), [weak]).verdict == "inconclusive here"
    with pytest.raises(ValueError, match="needs its Unpaired estimate"):
        Evidence("omniglot 5w1s", "omniglot", paired=False).interval()


def test_four_rows_combine_for_a_difference_of_drops():
    rows = [pd.Series(_row("x", m, value=v, ci95=c, n_test=n)) for m, v, c, n in
            (("a", 80.0, 1.0, 600), ("b", 50.0, 2.0, 300), ("c", 70.0, 1.5, 600), ("d", 60.0, 0.5, 100))]
    u = claims.combine([(rows[0], 1.0), (rows[1], -1.0), (rows[2], -1.0), (rows[3], 1.0)])
    ses = [c / sps.t.ppf(0.975, n - 1) for c, n in ((1.0, 600), (2.0, 300), (1.5, 600), (0.5, 100))]
    dfs = [599, 299, 599, 99]
    assert u.mean == pytest.approx(20.0) and u.se == pytest.approx(np.sqrt(np.sum(np.square(ses))))
    assert u.df == pytest.approx(np.sum(np.square(ses)) ** 2 / sum(s ** 4 / d for s, d in zip(ses, dfs, strict=True)))
    assert u.n == 100
    zero = pd.Series(_row("x", "z", value=1.0, ci95=0.0, n_test=10))
    assert claims.combine([(zero, 1.0), (zero, -1.0)]).df == 18  # no spread: the dfs added, not 0/0


# ---------------------------------------------------------------------------------------------------------------------
# The rows: seeds, budgets, per-unit files and pairing
# ---------------------------------------------------------------------------------------------------------------------
def test_row_gathers_every_training_seed(tmp_path):
    rows = [_row("04_prototypical_networks", "protonet", value=70.0 + 2 * s, ci95=1.0, seed=s, seconds=60.0 + 2 * s,
                 steps=1000) for s in range(3)]
    r = _results(tmp_path, rows)
    got = r.row("04_prototypical_networks", "protonet", *OMNIGLOT)
    assert got["seeds"] == 3 and got["value"] == pytest.approx(72.0) and got["n_test"] == 600
    se1 = 1.0 / sps.t.ppf(0.975, 599)
    between, within = 4.0 / 3, se1 ** 2
    df = (between + within) ** 2 / (between ** 2 / 2 + within ** 2 / 599)
    assert got["se"] == pytest.approx(np.sqrt(between + within)) and got["df"] == pytest.approx(df)
    assert got["ci95"] == pytest.approx(sps.t.ppf(0.975, df) * got["se"])
    assert got["train_seconds"] == pytest.approx(62.0) and got["seed"] == 0
    assert claims.standard_error(got) == (pytest.approx(got["se"]), pytest.approx(df), 600)
    assert len(r.rows("04_prototypical_networks", "protonet", *OMNIGLOT)) == 3
    one = _results(tmp_path, rows[:1]).row("04_prototypical_networks", "protonet", *OMNIGLOT)
    assert one["seeds"] == 1 and one["value"] == 70.0 and one["ci95"] == 1.0
    assert r.row("04_prototypical_networks", "protonet", "omniglot", 5, 5) is None
    budget = r.budget(got)
    assert budget.seeds == (0, 1, 2) and budget.text() == "protonet (04): 1,000 steps, 32,000 examples, 60 to 64 s, " \
                                                            "3 seeds"
    with pytest.raises(ValueError, match="two rows of one seed"):
        _results(tmp_path, [*rows, rows[0]]).row("04_prototypical_networks", "protonet", *OMNIGLOT)
    with pytest.raises(TypeError, match="unknown qualifiers"):
        r.row("04_prototypical_networks", "protonet", *OMNIGLOT, colour=1)


def test_seeds_whose_rows_lack_n_test_aggregate_with_normal_quantiles(tmp_path):
    rows = [_row("04_prototypical_networks", "protonet", value=v, ci95=1.0, n_test=None, seed=s)
            for s, v in enumerate((70.0, 72.0))]
    got = _results(tmp_path, rows).row("04_prototypical_networks", "protonet", *OMNIGLOT)
    assert math.isnan(got["df"]) and claims.standard_error(got)[1] is None
    assert got["se"] == pytest.approx(np.sqrt(2.0 / 2 + (1 / sps.norm.ppf(0.975)) ** 2))
    assert got["ci95"] == pytest.approx(sps.norm.ppf(0.975) * got["se"])


def test_budgets_print_steps_examples_seconds_and_seeds_or_a_dash():
    b = claims.Budget("protonet (04)", (0,), (math.nan,), (math.nan,), (math.nan,))
    assert b.text() == "protonet (04): – steps, – examples, –, 1 seed"
    b = claims.Budget("maml (09)", (0, 1), (100.0, 120.0), (3200.0, 3200.0), (10.4, math.nan))
    assert b.text() == "maml (09): 100 to 120 steps, 3,200 examples, 10 s, 2 seeds"


def test_an_old_results_table_without_the_budget_columns_reads_them_as_missing(tmp_path):
    old = _table([_row("04_prototypical_networks", "protonet"), _row("00_background", "pretrain_finetune", value=80.0)])
    old = old.drop(columns=["budget", "train_steps", "train_examples"])
    r = claims.Results(old)
    a = r.row("04_prototypical_networks", "protonet", *OMNIGLOT)
    assert a is not None and pd.isna(a["budget"]) and pd.isna(a["train_steps"])
    e = r.evidence("omniglot 5w1s", a, r.row("00_background", "pretrain_finetune", *OMNIGLOT))
    assert e.a[0].text() == "protonet (04): – steps, – examples, 60 s, 1 seed" and not e.paired


def test_paired_only_on_the_same_draw_of_the_same_units(tmp_path):
    """Two rows pair when episode seed, queries, test data and metric are equal (<NA> equal to <NA>) and they have
    the same units; any difference leaves them unpaired."""
    a, b = _episodes(92.0), _episodes(90.0)
    rows = [_row("04_prototypical_networks", "protonet", value=92.0), _row("00_background", "pretrain_finetune")]
    home = {"04_prototypical_networks": _units("protonet", a)}
    same = _results(tmp_path / "same", rows, {**home, "00_background": _units("pretrain_finetune", b)})
    pair = (("04_prototypical_networks", "protonet"), ("00_background", "pretrain_finetune"))
    e = same.evidence("omniglot 5w1s", *(same.row(nb, m, *OMNIGLOT) for nb, m in pair))
    assert e.paired and e.differences.shape == (1, 600) and np.allclose(e.differences[0], a - b)
    for name, change in (("seed", dict(episode_seed=1)), ("queries", dict(queries=5)), ("data", dict(data="d1")),
                         ("metric", dict(metric="roc_auc")), ("units", dict(first=1))):
        r = _results(tmp_path / name, rows, {**home, "00_background": _units("pretrain_finetune", b, **change)})
        e = r.evidence("omniglot 5w1s", r.row("04_prototypical_networks", "protonet", *OMNIGLOT),
                       r.row("00_background", "pretrain_finetune", *OMNIGLOT))
        assert not e.paired and e.unpaired is not None and e.unpaired.mean == pytest.approx(2.0), name
    nan = _results(tmp_path / "nan", rows, {"04_prototypical_networks": _units("protonet", a, queries=None),
                                            "00_background": _units("pretrain_finetune", b, queries=None)})
    assert nan.pairing(nan.row("04_prototypical_networks", "protonet", *OMNIGLOT),
                       nan.row("00_background", "pretrain_finetune", *OMNIGLOT)) is not None
    # a qualified row (here: task shift) is never paired through the unqualified row's units
    shifted = _row("04_prototypical_networks", "protonet", trained_on="cifar_fs")
    r = _results(tmp_path / "shift", [*rows, shifted], {**home, "00_background": _units("pretrain_finetune", b)})
    assert r.pairing(r.row("04_prototypical_networks", "protonet", *OMNIGLOT, trained_on="cifar_fs"),
                     r.row("00_background", "pretrain_finetune", *OMNIGLOT)) is None


def test_training_seeds_pair_as_a_seeds_by_units_matrix(tmp_path):
    """The per-unit key includes the training seed (a second seed no longer overwrites the first)."""
    base = _episodes(90.0, n=50)
    a = {s: base + s + RNG.normal(0, 1, 50) for s in range(3)}
    rows = [_row("04_prototypical_networks", "protonet", value=90.0 + s, seed=s) for s in range(2)]
    rows += [_row("00_background", "pretrain_finetune", seed=0)]
    units = {"04_prototypical_networks": [u for s in range(3) for u in _units("protonet", a[s], seed=s)],
             "00_background": _units("pretrain_finetune", base)}
    r = _results(tmp_path, rows, units)
    assert sorted(r.units[("04_prototypical_networks", "protonet", "omniglot", 5, 1, "accuracy", None)][(0, 15, "d0")]) == \
        [0, 1, 2]
    pa, pb = r.row("04_prototypical_networks", "protonet", *OMNIGLOT), r.row("00_background", "pretrain_finetune",
                                                                             *OMNIGLOT)
    d, note = r.pairing(pa, pb)
    assert d.shape == (2, 50) and np.allclose(d, np.stack([a[0] - base, a[1] - base]))  # the rows' seeds only
    assert note == "B's one seed against each of A's 2"
    e = r.evidence("omniglot 5w1s", pa, pb)
    assert e.paired and e.interval().seeds == 2 and e.a[0].seeds == (0, 1) and e.b[0].seeds == (0,)
    assert "B's one seed against each of A's 2" in judge(_claim("beats"), [e]).sentence()
    d, note = r.pairing(pb, pa)
    assert d.shape == (2, 50) and np.allclose(d, np.stack([base - a[0], base - a[1]]))
    assert note == "A's one seed against each of B's 2"


def test_pair_seeds_seed_by_seed_or_in_sorted_order():
    a = {2: np.array([3.0, 4.0]), 0: np.array([1.0, 2.0]), 1: np.array([5.0, 5.0])}
    same, note = claims.pair_seeds(a, {s: np.zeros(2) + s for s in (1, 0, 2)})
    assert note == "" and same.tolist() == [[1.0, 2.0], [4.0, 4.0], [1.0, 2.0]]
    other, note = claims.pair_seeds(a, {7: np.zeros(2), 5: np.ones(2)})
    assert other.tolist() == [[0.0, 1.0], [5.0, 5.0]]  # A's seeds 0, 1 with B's 5, 7
    assert note == "seeds paired in sorted order: A [0, 1] with B [5, 7] (A has [0, 1, 2], B [5, 7])"
    one, note = claims.pair_seeds({4: np.array([1.0, 1.0])}, {9: np.array([0.5, 0.0])})
    assert one.tolist() == [[0.5, 1.0]] and note == ""
    with pytest.raises(ValueError, match="^a paired difference needs at least one seed on each side$"):
        claims.pair_seeds({}, {0: np.zeros(2)})
    objects = claims.pair_seeds({0: np.array([1.0, 2.0], dtype=object)}, {0: np.array([0.5, 0.5], dtype=object)})[0]
    assert objects.dtype == np.float64 and objects.tolist() == [[0.5, 1.5]]
    with pytest.raises(ValueError, match="same episodes"):
        paired_evidence("s", "omniglot", np.zeros(5), np.zeros(6))
    e = paired_evidence("omniglot 5w1s", "omniglot", np.array([1.0, 2.0], dtype=object),
                        np.array([1.0, 0.0], dtype=object))
    assert (e.setting, e.dataset, e.differences.dtype, e.differences.tolist()) == ("omniglot 5w1s", "omniglot",
                                                                                    np.float64, [0.0, 2.0])


def test_old_episodes_files_read_as_one_training_seed(tmp_path):
    folder = tmp_path / "episodes"
    folder.mkdir()
    old = pd.DataFrame({"method": "protonet", "dataset": "omniglot", "ways": 5, "shots": 1, "seed": 7, "queries": 15,
                        "data": "d0", "episode": [1, 0], "accuracy": [80.0, 90.0]})
    old.to_csv(folder / "04_prototypical_networks.csv", index=False)
    units = claims.read_units(folder / "04_prototypical_networks.csv")
    assert list(units.columns) == claims.UNIT_COLUMNS
    assert units[["seed", "episode_seed", "metric", "unit", "value"]].values.tolist() == [
        [0, 7, "accuracy", 1, 80.0], [0, 7, "accuracy", 0, 90.0]]
    r = claims.Results(_table([_row("04_prototypical_networks", "protonet")]), folder)
    scores = r.units[("04_prototypical_networks", "protonet", "omniglot", 5, 1, "accuracy", None)][(7, 15, "d0")][0]
    assert scores.tolist() == [90.0, 80.0]  # in unit order
    # columns are read by name; a file lacking one is refused
    digest = pd.DataFrame(_units("protonet", [1.0, 2.0], data="0123"))
    digest.to_csv(folder / "x.csv", index=False)
    assert claims.read_units(folder / "x.csv").data.tolist() == ["0123", "0123"]  # a digest stays a string
    shuffled = pd.DataFrame(_units("protonet", [1.0, 2.0]))[list(reversed(UNIT_COLUMNS))]
    shuffled.to_csv(folder / "x.csv", index=False)
    assert claims.read_units(folder / "x.csv").value.tolist() == [1.0, 2.0]
    shuffled.drop(columns="episode_seed").to_csv(folder / "x.csv", index=False)
    with pytest.raises(ValueError, match=r"not a per-unit file \(missing \['episode_seed'\]"):
        claims.read_units(folder / "x.csv")
    pd.DataFrame(_units("protonet", [1.0, 2.0]) * 2).to_csv(folder / "x.csv", index=False)
    with pytest.raises(ValueError, match="repeats a unit"):
        claims.Results(_table([]), folder)


def test_lower_is_better_turns_the_difference_around(tmp_path):
    rows = [_row("09_maml", "maml", (OMNIGLOT), value=1.0), _row("09_maml", "pretrained", value=3.0)]
    r = _results(tmp_path, rows, {"09_maml": _units("maml", [1.0, 2.0, 0.0]) + _units("pretrained", [3.0, 3.5, 2.5])})
    a, b = r.row("09_maml", "maml", *OMNIGLOT), r.row("09_maml", "pretrained", *OMNIGLOT)
    e = r.evidence("MSE", a, b, lower_is_better=True, reference=3.0)
    assert e.paired and e.differences.tolist() == [[2.0, 1.5, 2.5]] and e.reference == 3.0
    assert e.a[0].label == "maml (09)" and e.b[0].label == "pretrained (09)"


# ---------------------------------------------------------------------------------------------------------------------
# The catalogue's choices: best on validation, the right comparators, the same BatchNorm protocol, equal compute
# ---------------------------------------------------------------------------------------------------------------------
def _family_rows(val: dict[str, float], *, extra: list[dict] | None = None) -> list[dict]:
    """Three metric-based methods in omniglot 5w1s (relation_net the best on test) and chapter 00's baseline."""
    rows = [_row("01_siamese", "siamese", value=90.0), _row("02_relation_network", "relation_net", value=95.0),
            _row("04_prototypical_networks", "protonet", value=93.0), _row("00_background", "pretrain_finetune")]
    notebooks = {r["method"]: r["notebook"] for r in rows}
    rows += [_row(notebooks[m], m, value=v, metric="val_accuracy") for m, v in val.items()]
    return rows + (extra or [])


def test_best_of_a_family_is_chosen_on_validation_never_on_test(tmp_path):
    claim, gather = _gather("Metric-based meta-learning beats")
    r = _results(tmp_path, _family_rows({"siamese": 86.0, "protonet": 85.0}))
    [e] = gather(r)
    assert e.setting == "omniglot 5w1s (siamese)" and e.unpaired.mean == pytest.approx(0.0)
    assert e.note == "siamese chosen on val_accuracy 86.00 over protonet 85.00"
    assert e.b[0].label == "pretrain_finetune (00)"
    r = _results(tmp_path, _family_rows({"siamese": 80.0, "protonet": 85.0}))
    [e] = gather(r)
    assert e.setting == "omniglot 5w1s (protonet)" and e.unpaired.mean == pytest.approx(3.0)
    assert "protonet chosen on val_accuracy" in judge(claim, [e]).sentence()
    # relation_net has the best test row but no validation row: not eligible
    r = _results(tmp_path, _family_rows({"protonet": 85.0}))
    assert gather(r)[0].note == "protonet chosen on val_accuracy 85.00, the only one with it"
    # a validation row of another training seed does not count
    r = _results(tmp_path, _family_rows({}, extra=[_row("04_prototypical_networks", "protonet", value=85.0,
                                                        metric="val_accuracy", seed=1)]))
    [e] = gather(r)
    assert not e.measured and e.missing.startswith("no val_accuracy row for siamese, relation_net, protonet")
    v = judge(claim, [e])
    assert v.verdict == "not measured" and "cannot be chosen on validation" in v.sentence()
    # no rows at all: no evidence
    assert gather(_results(tmp_path, [])) == []


def test_gradient_rows_meet_the_baseline_at_the_same_batchnorm_protocol(tmp_path):
    claim, gather = _gather("Gradient-based meta-learning beats")
    rows = [_row("09_maml", "maml_transductive_15q", value=93.0), _row("09_maml", "maml", value=85.0),
            _row("09_maml", "maml", value=70.0, metric="val_accuracy"),  # the model's validation row, by its id
            _row("00_background", "pretrain_finetune", value=91.0)]
    [e] = gather(_results(tmp_path, rows))
    assert not e.measured and e.setting == "omniglot 5w1s (maml_transductive_15q)"
    assert e.missing == ("no pretrain_finetune_transductive_15q row in 00_background, the same BatchNorm protocol as "
                         "maml_transductive_15q")
    rows.append(_row("00_background", "pretrain_finetune_transductive_15q", value=92.0))
    [e] = gather(_results(tmp_path, rows))
    assert e.unpaired.mean == pytest.approx(1.0) and e.b[0].label == "pretrain_finetune_transductive_15q (00)"
    assert e.note == "maml_transductive_15q chosen on val_accuracy 70.00, the only one with it"
    # MAML's own claim: the same rule
    _, maml = _gather("MAML beats pre-training + fine-tuning on few-shot")
    [e] = maml(_results(tmp_path, rows))
    assert e.unpaired.mean == pytest.approx(1.0) and e.b[0].label == "pretrain_finetune_transductive_15q (00)"
    [e] = maml(_results(tmp_path, rows[:-1]))
    assert not e.measured and "pretrain_finetune_transductive_15q" in e.missing
    # a plain (non-transductive) row meets the plain baseline
    r = _results(tmp_path, rows)
    assert r.versus_baseline("s", r.row("09_maml", "maml", *OMNIGLOT), "maml").unpaired.mean == pytest.approx(-6.0)


def test_hypernetwork_is_compared_with_protonets_home_rows(tmp_path):
    claim, gather = _gather("A task-conditioned hypernetwork")
    rows = [_row("08_hypernetworks", "hypernet", value=96.0), _row("08_hypernetworks", "protonet", value=90.0),
            _row("04_prototypical_networks", "protonet", value=95.5, seconds=456.8)]
    x = _episodes(96.0, n=100)
    r = _results(tmp_path, rows, {"08_hypernetworks": _units("hypernet", x),
                                  "04_prototypical_networks": _units("protonet", x - 0.5)})
    [e] = gather(r)
    assert e.paired and np.allclose(e.differences, 0.5) and e.b[0].label == "protonet (04)"
    s = judge(claim, [e]).sentence()
    assert "protonet (04): 1,000 steps, 32,000 examples, 457 s, 1 seed" in s and "hypernet (08)" in s


def test_every_static_hypernetwork_level_in_every_setting_with_rows(tmp_path):
    _, gather = _gather("A static hypernetwork")
    levels = ("hypernet_static", "hypernet_static_z16", "hypernet_static_z4")
    cifar = ("cifar_fs", 5, 1)
    rows = [_row("08_hypernetworks", m, s, value=90.0) for m in levels for s in (OMNIGLOT, cifar)]
    rows += [_row("08_hypernetworks", "protonet", s, value=89.0) for s in (OMNIGLOT, cifar)]
    rows += [_row("04_prototypical_networks", "protonet", s, value=50.0) for s in (OMNIGLOT, cifar)]
    evidence = gather(_results(tmp_path, rows))
    assert [e.setting for e in evidence] == [f"{claims.label(s)} {m}" for s in (OMNIGLOT, cifar) for m in levels]
    assert all(e.unpaired.mean == pytest.approx(1.0) for e in evidence)  # against 08's ProtoNet


def test_task_shift_compares_drops_with_pretrained_features(tmp_path):
    claim, gather = _gather("Metric-based models lose more under task shift")
    cifar = ("cifar_fs", 5, 1)
    rows = [_row("04_prototypical_networks", "protonet", cifar, value=54.0),
            _row("04_prototypical_networks", "protonet", cifar, value=27.0, trained_on="omniglot"),
            _row("00_background", "pretrain_finetune", cifar, value=60.0)]
    [e] = gather(_results(tmp_path, rows))
    assert not e.measured and e.setting == "protonet omniglot→cifar_fs 5w1s"
    assert e.missing == "no pretrain_finetune rows in 00_background trained on omniglot and on cifar_fs"
    rows.append(_row("00_background", "pretrain_finetune", cifar, value=40.0, trained_on="omniglot"))
    [e] = gather(_results(tmp_path, rows))
    assert e.unpaired.mean == pytest.approx((54 - 27) - (60 - 40)) and len(e.a) == len(e.b) == 2
    assert e.unpaired.se == pytest.approx(2 * 0.5 / sps.t.ppf(0.975, 599))
    assert (e.dataset, e.paired, e.setting) == ("cifar_fs", False, "protonet omniglot→cifar_fs 5w1s")
    v = judge(claim, [e])
    assert v.verdict == "holds" and v.sentence().count("pretrain_finetune (00)") == 2
    assert claims._sides(v.settings, "a")[0] == ("protonet (04): 1,000 steps, 32,000 examples, 60 s, 1 seed + "
                                                 "protonet (04): 1,000 steps, 32,000 examples, 60 s, 1 seed")
    # every shifted row in order, one without its home row left out, one without chapter 00's shift not measured
    rows += [_row("02_relation_network", "relation_net", cifar, value=30.0, trained_on="omniglot"),
             _row("03_matching_network", "matching_net", ("omniglot", 5, 5), value=70.0, trained_on="cifar_fs"),
             _row("03_matching_network", "matching_net", ("omniglot", 5, 5), value=98.0),
             _row("03_matching_network", "matching_net", ("omniglot", 20, 5), value=60.0, trained_on="cifar_fs"),
             _row("03_matching_network", "matching_net", ("omniglot", 20, 5), value=95.0)]
    evidence = gather(_results(tmp_path, rows))
    assert [(e.setting, e.measured) for e in evidence] == [
        ("matching_net cifar_fs→omniglot 5w5s", False), ("matching_net cifar_fs→omniglot 20w5s", False),
        ("protonet omniglot→cifar_fs 5w1s", True)]
    assert evidence[0].dataset == "omniglot" and evidence[0].a[1].label == "matching_net (03)"


def test_drug_discovery_pairs_the_meta_initialisation_chosen_on_validation_per_assay(tmp_path):
    claim, gather = _gather("…and on the MoleculeNet")
    tox = ("tox21", 2, 10)
    rows = [_row("13_drug_discovery", m, tox, value=v, n_test=3, metric="roc_auc")
            for m, v in (("maml", 74.0), ("fomaml", 75.0), ("multitask_finetune", 71.0))]
    [e] = gather(_results(tmp_path, rows))
    assert not e.measured and e.missing.startswith("no val_roc_auc row for maml, fomaml")
    rows += [_row("13_drug_discovery", "maml", tox, value=70.0, metric="val_roc_auc"),
             _row("13_drug_discovery", "fomaml", tox, value=72.0, metric="val_roc_auc")]
    [e] = gather(_results(tmp_path, rows))  # no per-assay file: unpaired, and said so
    assert e.setting == "tox21 k=10 (fomaml)" and not e.paired and e.unpaired.mean == pytest.approx(4.0)
    assert "unpaired" in judge(claim, [e]).sentence()
    units = {"13_drug_discovery": _units("fomaml", [80.0, 70.0, 75.0], tox, metric="roc_auc", queries=None)
             + _units("multitask_finetune", [76.0, 67.0, 70.0], tox, metric="roc_auc", queries=None)}
    [e] = gather(_results(tmp_path, rows, units))
    assert e.paired and e.differences.tolist() == [[4.0, 3.0, 5.0]]
    ci = e.interval()
    assert ci.df == 2 and ci.half_width == pytest.approx(sps.t.ppf(0.975, 2) * 1.0 / np.sqrt(3))
    _, fsmol = _gather("Meta-initialisations beat multitask")
    rows = [_row("13_drug_discovery", m, ("fsmol", None, k), value=v, metric=metric)
            for k in (16, 32) for m, v, metric in (("anil", 0.2, "delta_auprc"), ("anil", 0.1, "val_delta_auprc"),
                                                    ("multitask_finetune", 0.25, "delta_auprc"))]
    evidence = fsmol(_results(tmp_path, rows))
    assert [e.setting for e in evidence] == ["fsmol k=16 (anil)", "fsmol k=32 (anil)"]
    assert evidence[0].unpaired.mean == pytest.approx(-0.05)


def test_equal_compute_pairs_each_budgets_checkpoints_over_seeds_and_episodes(tmp_path):
    """The representative's checkpoints (04's protonet rows with a budget) against chapter 00's pre-training
    checkpoints at the same budget: one evidence per budget, paired over 3 training seeds x the shared episodes."""
    _, gather = _gather("At equal training seconds, metric-based")
    assert gather(_results(tmp_path, [_row("04_prototypical_networks", "protonet", CIFAR)])) == []
    base = _episodes(50.0, n=40)
    rows, units = [], {"04_prototypical_networks": [], "00_background": []}
    for budget, gain in ((100, 1.0), (600, 5.0)):
        for seed in (0, 1, 2):
            rows += [_row("04_prototypical_networks", "protonet", CIFAR, 50 + gain, budget=budget, seed=seed,
                          steps=20 * budget, seconds=budget + seed),
                     _row("00_background", "pretrain_finetune", CIFAR, 50.0, budget=budget, seed=seed)]
            units["04_prototypical_networks"] += _units("protonet", base + gain + 0.1 * seed, CIFAR, seed=seed,
                                                        budget=budget)
            units["00_background"] += _units("pretrain_finetune", base, CIFAR, seed=seed, budget=budget)
    rows += [_row("04_prototypical_networks", "relation_net", CIFAR, 99.0, budget=100),  # not the representative
             _row("04_prototypical_networks", "protonet", CIFAR, 10.0)]  # the chapter's main row: no budget
    units["04_prototypical_networks"] += _units("protonet", base - 40, CIFAR)
    evidence = gather(_results(tmp_path, rows, units))
    assert [e.setting for e in evidence] == ["cifar_fs 5w1s at 100 s (protonet)", "cifar_fs 5w1s at 600 s (protonet)"]
    assert all(e.paired for e in evidence) and [e.differences.shape for e in evidence] == [(3, 40)] * 2
    assert [e.interval().mean for e in evidence] == pytest.approx([1.1, 5.1])
    assert evidence[1].a[0].steps == (12000,) * 3 and evidence[1].a[0].seeds == (0, 1, 2)
    # no pre-training checkpoint at a budget: not measured (never another budget's row)
    rows = [r for r in rows if not (r["method"] == "pretrain_finetune" and r["budget"] == 100)]
    first, second = gather(_results(tmp_path, rows, units))
    assert not first.measured and "pretrain_finetune" in first.missing and second.measured


def test_equal_compute_compares_gradient_checkpoints_under_transductive_batchnorm(tmp_path):
    _, gather = _gather("At equal training seconds, gradient-based")
    rows = [_row("09_maml", "maml", CIFAR, 60.0, budget=300),  # its own protocol: not the shared episodes
            _row("09_maml", "maml_transductive_15q", CIFAR, 55.0, budget=300),
            _row("00_background", "pretrain_finetune", CIFAR, 99.0, budget=300),
            _row("00_background", "pretrain_finetune_transductive_15q", CIFAR, 50.0, budget=300)]
    [e] = gather(_results(tmp_path, rows))
    assert e.setting == "cifar_fs 5w1s at 300 s (maml)" and e.unpaired.mean == pytest.approx(5.0)


def test_the_sinusoid_claims_read_mse_with_a_relative_margin(tmp_path):
    claim, gather = _gather("Reptile with k = 1 is joint training")
    assert claim.relative_margin == stats.SINUSOID_RELATIVE_MARGIN == 0.1
    rows = [_row("11_reptile", "reptile", (("sinusoid", None, 5)), value=2.9, ci95=0.05, metric="mse",
                 adapt_steps=k, inner_steps=1) for k in (1, 10)]
    rows += [_row("11_reptile", "joint", ("sinusoid", None, 5), value=2.8, ci95=0.05, metric="mse", adapt_steps=k,
                  inner_steps=0) for k in (1, 10)]
    evidence = gather(_results(tmp_path, rows))
    assert [e.setting for e in evidence] == ["MSE after 1 step", "MSE after 10 steps"]
    v = judge(claim, evidence)
    assert v.verdict == "holds" and v.settings[0].margin == pytest.approx(0.28)
    assert evidence[0].unpaired.mean == pytest.approx(-0.1)  # joint − reptile: lower MSE is better
    wide = [{**r, "ci95": 0.4} for r in rows]
    v = judge(claim, gather(_results(tmp_path, wide)))
    assert v.verdict == "unreachable" and "the margin ±0.28 cannot be met with 600 units" in v.sentence()


def test_mann_is_read_at_the_2nd_instance_and_on_the_5_way_episodes(tmp_path):
    _, gather = _gather("A memory-augmented network")
    sequence = ("omniglot", 5, None)
    rows = [_row("06_mann", m, sequence, value=v + i, metric="instance_accuracy", n_test=1000, instance=i)
            for m, v in (("mann", 70.0), ("lstm", 60.0)) for i in (1, 2)]
    rows += [_row("06_mann", m, (("omniglot", w, k)), value=v + k) for m, v in (("mann", 80.0), ("lstm", 75.0))
             for w in (5, 20) for k in (1, 5)]  # the claim reads the 5-way episodes only
    evidence = gather(_results(tmp_path, rows))
    assert [e.setting for e in evidence] == ["2nd instance", "omniglot 5w1s", "omniglot 5w5s"]
    assert [e.unpaired.mean for e in evidence] == pytest.approx([10.0, 5.0, 5.0])
    assert evidence[0].dataset == "omniglot" and evidence[0].unpaired.n == 1000
    assert [e.setting for e in gather(_results(tmp_path, [r for r in rows if r["instance"] != 2]))] == \
        ["omniglot 5w1s", "omniglot 5w5s"]
    assert [e.setting for e in gather(_results(tmp_path, [r for r in rows if r["method"] == "mann"]))] == []


def test_more_ways_is_read_at_equal_episodes_and_at_equal_images(tmp_path):
    _, gather = _gather("Training with more ways")
    rows = [_row("04_prototypical_networks", m, ("omniglot", w, 1), value=v + w)
            for m, v in (("protonet", 90.0), ("protonet_train_5way_episode_matched", 80.0),
                         ("protonet_train_5way_image_matched", 85.0)) for w in (5, 20)]
    evidence = gather(_results(tmp_path, rows))
    assert [e.setting for e in evidence] == ["omniglot 5w1s, equal episodes", "omniglot 5w1s, equal images",
                                             "omniglot 20w1s, equal episodes", "omniglot 20w1s, equal images"]
    assert [e.unpaired.mean for e in evidence] == pytest.approx([10.0, 5.0, 10.0, 5.0])
    assert evidence[0].b[0].label == "protonet_train_5way_episode_matched (04)"
    partial = [r for r in rows if not (r["ways"] == 5 and r["method"] == "protonet")
               and not (r["ways"] == 20 and r["method"].endswith("image_matched"))]
    assert [e.setting for e in gather(_results(tmp_path, partial))] == ["omniglot 20w1s, equal episodes"]


def test_pairs_need_both_rows_and_name_their_setting(tmp_path):
    _, fce = _gather("Full Context Embeddings")
    rows = [_row("03_matching_network", "matching_net_fce", s, value=91.0) for s in (OMNIGLOT, ("cifar_fs", 5, 1))]
    rows += [_row("03_matching_network", "matching_net", ("cifar_fs", 5, 1), value=90.0)]
    [e] = fce(_results(tmp_path, rows))
    assert (e.setting, e.dataset) == ("cifar_fs 5w1s", "cifar_fs") and e.unpaired.mean == pytest.approx(1.0)
    _, static = _gather("A static hypernetwork")
    assert static(_results(tmp_path, [_row("08_hypernetworks", "hypernet_static", value=1.0)])) == []
    _, anil = _gather("ANIL matches MAML")
    rows = [_row("12_anil", "anil_transductive_15q", s) for s in (OMNIGLOT, ("cifar_fs", 5, 5))]
    rows += [_row("09_maml", "maml_transductive_15q", s) for s in (("cifar_fs", 5, 5), ("omniglot", 20, 1))]
    assert [e.setting for e in anil(_results(tmp_path, rows))] == ["cifar_fs 5w5s"]
    _, maml = _gather("MAML beats pre-training + fine-tuning on few-shot")
    assert [e.setting for e in maml(_results(tmp_path, rows))] == ["omniglot 20w1s", "cifar_fs 5w5s"]
    r = _results(tmp_path, rows)
    with pytest.raises(ValueError, match="not a row of the model protonet"):
        r.versus_baseline("s", r.row("09_maml", "maml_transductive_15q", "omniglot", 20, 1), "protonet")


def test_sinusoid_steps_are_named_and_need_both_rows(tmp_path):
    rows = [_row("09_maml", m, ("sinusoid", None, 5), value=v, metric="mse", adapt_steps=k)
            for m, v in (("maml", 1.0), ("pretrained", 2.0)) for k in (1, 2, 10)]
    r = _results(tmp_path, rows)
    evidence = claims._sinusoid(r, ("09_maml", "maml", {}), ("09_maml", "pretrained", {}), steps=(1, 2, 10))
    assert [e.setting for e in evidence] == ["MSE after 1 step", "MSE after 2 steps", "MSE after 10 steps"]
    assert [e.reference for e in evidence] == [2.0, 2.0, 2.0] and evidence[0].dataset == "sinusoid"
    r = _results(tmp_path, [x for x in rows if x["method"] == "maml" or x["adapt_steps"] == 10])
    assert [e.setting for e in claims._sinusoid(r, ("09_maml", "maml", {}), ("09_maml", "pretrained", {}))] == \
        ["MSE after 10 steps"]


def test_setting_sentences_word_for_word():
    b = claims.Budget("x (01)", (0,), (10.0,), (20.0,), (30.0,))
    x = RNG.normal(0, 1, 8)
    x = x - x.mean()
    e = Evidence("omniglot 5w1s", "omniglot", x + 0.5, a=(b,), b=(b,), note="chosen")
    ci = e.interval()
    beats = claims._judge_setting(_claim("beats"), e)
    assert beats.text() == (f"omniglot 5w1s +0.50 ± {ci.half_width:.2f} (95% CI, paired over 8 units × 1 seed) "
                            "[A x (01): 10 steps, 20 examples, 30 s, 1 seed; B x (01): 10 steps, 20 examples, 30 s, "
                            "1 seed] (chosen)")
    two = Evidence("s", "omniglot", np.stack([x, x + 1]))
    assert claims._judge_setting(_claim("beats"), two).text().endswith("paired over 8 units × 2 seeds)")
    wide = claims._judge_setting(_claim("matches"), Evidence("s", "omniglot", x * 5 + 0.25))
    h = wide.interval.half_width
    assert wide.text() == f"s: the margin ±1.00 cannot be met with 8 units (half-width {h:.2f}; +0.25, paired over " \
                          "8 units × 1 seed)"
    close = claims._judge_setting(_claim("matches"), Evidence("s", "omniglot", x * 0.1 + 0.25))
    assert close.text().startswith(f"s +0.25 ± {close.interval.half_width:.3g} (90% CI, margin ±1.00, paired over 8 ")
    assert claims._judge_setting(_claim("beats"), Evidence("s", "omniglot", x * 0.1 - 0.25)).text().startswith(
        "s -0.25 ± 0.0497 (95% CI, paired")
    assert claims._num(0.1) == "0.10" and claims._num(0.0123, True) == "+0.0123" and claims._num(0.0) == "0.00"
    assert claims._num(float("inf")) == "inf" and claims._num(-0.05) == "-0.05" and claims._num(1e-5) == "1e-05"


class _Fixed:
    """An unpaired estimate with an exactly given interval, to read the rules at their boundaries."""

    def __init__(self, mean: float, half: float) -> None:
        self.mean, self.half, self.df = mean, half, 100.0

    def interval(self, level: float = 0.95):
        return stats.Interval(self.mean, self.half, 100.0, 600, level=level)


@pytest.mark.parametrize("mean, half, beats, matches", [
    (0.5, 0.5, "neither", "inconclusive"), (-0.5, 0.5, "neither", "inconclusive"), (0.5, 0.25, "A", "equivalent"),
    (-0.5, 0.25, "B", "equivalent"), (1.5, 0.5, "A", "different"), (-1.5, 0.5, "B", "different"),
    (0.0, 1.0, "neither", "unreachable"), (0.0, 0.999, "neither", "equivalent"), (0.75, 0.25, "A", "inconclusive"),
    (-0.75, 0.25, "B", "inconclusive")])
def test_the_claims_read_the_interval_at_its_boundaries(mean, half, beats, matches):
    """Touching 0 is no win; touching the margin is not inside it; a half-width equal to the margin is out of reach."""
    e = Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=_Fixed(mean, half))
    assert judge(_claim("beats"), [e]).settings[0].outcome == beats
    assert judge(_claim("matches"), [e]).settings[0].outcome == matches


def test_missing_settings_carry_their_names_and_budgets(tmp_path):
    r = _results(tmp_path, [_row("09_maml", "maml_transductive_15q")])
    e = r.versus_baseline("omniglot 5w1s", r.row("09_maml", "maml_transductive_15q", *OMNIGLOT), "maml")
    assert (e.setting, e.dataset, e.note, e.b) == ("omniglot 5w1s", "omniglot", "", ())
    assert r.versus_baseline("s", r.row("09_maml", "maml_transductive_15q", *OMNIGLOT), "maml", note="chosen").note \
        == "chosen"
    assert e.a[0].label == "maml_transductive_15q (09)"
    _, family = _gather("Metric-based meta-learning beats")
    [e] = family(_results(tmp_path, [_row("04_prototypical_networks", "protonet", ("cifar_fs", 5, 1))]))
    assert (e.setting, e.dataset, e.measured) == ("cifar_fs 5w1s", "cifar_fs", False)
    _, tox = _gather("…and on the MoleculeNet")
    rows = [_row("13_drug_discovery", m, ("muv", 2, 10), metric="roc_auc") for m in ("maml", "multitask_finetune")]
    [e] = tox(_results(tmp_path, rows))
    assert (e.setting, e.dataset, e.measured) == ("muv k=10", "muv", False)
    with pytest.raises(ValueError, match="^a confidence level lies in"):
        Unpaired(0.0, 1.0, 10.0).interval(0.0)


def test_drug_sizes_without_multitask_rows_are_skipped(tmp_path):
    rows = [_row("13_drug_discovery", m, ("fsmol", None, k), value=v, metric=metric)
            for k in (16, 32) for m, v, metric in (("anil", 0.2, "delta_auprc"), ("anil", 0.1, "val_delta_auprc"),
                                                    ("multitask_finetune", 0.25, "delta_auprc")) if (k, m) != (16,
                                                                                                              "multitask_finetune")]
    evidence = claims._drugs(_results(tmp_path, rows), "fsmol", "delta_auprc", [(None, 16), (None, 32)])
    assert [(e.setting, e.note) for e in evidence] == [("fsmol k=32 (anil)", "anil chosen on val_delta_auprc 0.10, "
                                                                             "the only one with it")]


def test_budget_of_rows_without_budget_columns_or_seeds():
    b = claims.Budget.of(pd.DataFrame({"notebook": ["04_p", "04_p"], "method": ["protonet", "protonet"],
                                       "seed": [3, 7], "train_seconds": [10.0, 12.0]}))
    assert b.seeds == (3, 7) and b.steps == (math.nan,) * 2 or math.isnan(b.steps[0])
    assert b.text() == "protonet (04): – steps, – examples, 10 to 12 s, 2 seeds"
    b = claims.Budget.of(pd.DataFrame({"notebook": ["04_p"], "method": ["protonet"], "seed": [pd.NA]}))
    assert b.seeds == (0,) and b.text() == "protonet (04): – steps, – examples, –, 1 seed"
    assert claims.Budget.of(pd.DataFrame({"method": ["m"]})).label == "m ()"


def test_standard_errors_of_rows_of_one_or_several_seeds():
    ci95 = 1.0
    row = pd.Series({"value": 1.0, "ci95": ci95, "n_test": 2})
    assert claims.standard_error(row) == (pytest.approx(ci95 / sps.t.ppf(0.975, 1)), 1.0, 2)
    assert claims.standard_error(pd.Series({"value": 1.0, "ci95": ci95})) == (pytest.approx(ci95 / sps.norm.ppf(0.975)),
                                                                              None, 0)
    # a stale standard error on a one-seed row (a copy whose value and ci95 were replaced) is not read
    for stale in ({"se": 5.0, "df": 3.0}, {"se": 5.0, "df": 3.0, "seeds": 1}):
        assert claims.standard_error(pd.Series({"value": 1.0, "ci95": ci95, "n_test": 600, **stale}))[0] == \
            pytest.approx(ci95 / sps.t.ppf(0.975, 599))
    two = pd.Series({"value": 1.0, "ci95": 9.0, "n_test": 600, "seeds": 2, "se": 2.0, "df": 7.5})
    assert claims.standard_error(two) == (2.0, 7.5, 600)
    normal = claims.unpaired(pd.Series({"value": 2.0, "ci95": 1.0}), pd.Series({"value": 1.0, "ci95": 1.0,
                                                                                 "n_test": 600}))
    assert normal.df is None and normal.n == 0  # the fewest units: unknown
    endless = claims.unpaired(pd.Series({"value": 2.0, "ci95": None, "n_test": 600}),
                              pd.Series({"value": 1.0, "ci95": 1.0, "n_test": 500}))
    assert math.isinf(endless.se) and endless.df is None and endless.n == 500


def test_matches_sentences_count_every_outcome():
    wide = Evidence("w", "omniglot", paired=False, unpaired=_Fixed(0.0, 2.0))
    settings = [Evidence("e", "omniglot", paired=False, unpaired=_Fixed(0.0, 0.5)),
                Evidence("d", "omniglot", paired=False, unpaired=_Fixed(3.0, 0.5)), wide,
                Evidence("i", "omniglot", paired=False, unpaired=_Fixed(0.75, 0.5)),
                Evidence("m", "omniglot", missing="no rows")]
    v = judge(_claim("matches"), settings)
    assert v.verdict == "holds in 1 of 4, outside the margin in 1, unreachable in 1"
    assert v.sentence().startswith("holds in 1 of 4, outside the margin in 1, unreachable in 1: A within the margin "
                                   "of B in 1 of 4, outside it in 1, unreachable in 1, inconclusive in 1; not "
                                   "measured in 1 (e +0.00 ± 0.50 (90% CI, margin ±1.00, unpaired, Welch df 100); "
                                   "d +3.00 ± 0.50")
    assert v.sentence().endswith("; m: not measured (no rows))")


def test_validation_rows_are_found_for_hand_built_rows_and_other_scales(tmp_path):
    rows = [_row("09_maml", "maml_transductive_15q", value=93.0), _row("09_maml", "maml_transductive_15q", value=75.0,
                                                                       metric="val_accuracy"),
            _row("09_maml", "maml", value=70.0, metric="val_accuracy"),
            {**_row("09_maml", "maml", value=60.0), "scale": "paper"},
            {**_row("09_maml", "maml", value=61.0, metric="val_accuracy"), "scale": "paper"}]
    r = _results(tmp_path, rows)
    test = r.row("09_maml", "maml_transductive_15q", *OMNIGLOT)
    assert r.validation(test, "maml")["value"] == 75.0  # the test row's own id first
    paper = r.row("09_maml", "maml", *OMNIGLOT, scale="paper")
    assert r.validation(paper)["value"] == 61.0
    bare = pd.Series({"notebook": "09_maml", "method": "maml_transductive_15q", "dataset": "omniglot", "ways": 5,
                      "shots": 1, "value": 93.0})  # no metric, scale or seed: accuracy, study, every seed
    assert r.validation(bare)["value"] == 75.0
    alone = _results(tmp_path, rows[1:3])  # the test row is not in the table: all its validation rows count
    assert alone.validation(bare)["value"] == 75.0


def test_choose_breaks_ties_by_order_and_lists_the_others(tmp_path):
    rows = [_row(nb, m, value=v) for nb, m, v in (("01_siamese", "siamese", 90.0), ("02_relation_network",
                                                                                     "relation_net", 91.0),
                                                  ("04_prototypical_networks", "protonet", 92.0))]
    rows += [_row(x["notebook"], x["method"], value=v, metric="val_accuracy") for x, v in zip(rows, (80.0, 86.0, 80.0),
                                                                                              strict=True)]
    r = _results(tmp_path, rows)
    candidates = [(x["notebook"], x["method"], x["method"]) for x in rows[:3]]
    best, model, note = r.choose(candidates, OMNIGLOT)
    assert (best["method"], model, note) == ("relation_net", "relation_net", "relation_net chosen on val_accuracy "
                                                                             "86.00 over siamese 80.00, protonet 80.00")
    tie = _results(tmp_path, rows[:3] + [{**x, "value": 80.0} for x in rows[3:]])
    assert tie.choose(candidates, OMNIGLOT)[1] == "siamese"  # a tie goes to the first in the catalogue's order
    assert r.choose([("05_meta_gnn", "meta_gnn", "meta_gnn")], OMNIGLOT) == (None, "", "")
    assert _results(tmp_path, rows[:3]).choose(candidates, OMNIGLOT)[:2] == (None, "")


def test_hand_built_rows_pair_on_their_units_and_notes_join(tmp_path):
    a, b = _episodes(92.0, n=50), _episodes(90.0, n=50)
    units = {"04_prototypical_networks": _units("protonet", a) + _units("protonet", a, queries=None),
             "00_background": _units("pretrain_finetune", b) + _units("pretrain_finetune", b, queries=None)}
    r = _results(tmp_path, [], units)
    bare = [pd.Series({"notebook": nb, "method": m, "dataset": "omniglot", "ways": 5, "shots": 1, "value": v,
                       "ci95": 1.0}) for nb, m, v in (("04_prototypical_networks", "protonet", 92.0),
                                                      ("00_background", "pretrain_finetune", 90.0))]
    e = r.evidence("omniglot 5w1s", *bare, note="chosen")  # two common draws (15 queries, none): one, always
    assert e.paired is True and e.setting == "omniglot 5w1s" and e.note == "chosen"
    assert np.allclose(e.differences, a - b)
    e = r.evidence("s", *bare)
    assert e.note == "" and e.a[0].label == "protonet (04)"
    r = _results(tmp_path, [_row("04_prototypical_networks", "protonet", seed=s) for s in (0, 1)]
                 + [_row("00_background", "pretrain_finetune")],
                 {"04_prototypical_networks": _units("protonet", a) + _units("protonet", a + 1, seed=1),
                  "00_background": _units("pretrain_finetune", b)})
    e = r.evidence("s", r.row("04_prototypical_networks", "protonet", *OMNIGLOT),
                   r.row("00_background", "pretrain_finetune", *OMNIGLOT), note="chosen")
    assert e.note == "chosen; B's one seed against each of A's 2"
    plain = [_row("04_prototypical_networks", "protonet"), _row("00_background", "pretrain_finetune")]
    e = _results(tmp_path / "none", plain).evidence("s", *(pd.Series(x) for x in plain))
    assert e.paired is False and e.note == ""


def test_aggregate_budget_means_fewest_units_and_identical_seeds(tmp_path):
    rows = [_row("04_prototypical_networks", "protonet", value=70.0, ci95=0.0, n_test=600, seed=3, steps=1000,
                 examples=30000, seconds=10.0),
            _row("04_prototypical_networks", "protonet", value=70.0, ci95=0.0, n_test=500, seed=5, steps=1200,
                 examples=34000, seconds=None)]
    got = _results(tmp_path, rows).row("04_prototypical_networks", "protonet", *OMNIGLOT)
    assert (got["seeds"], got["seed"], got["n_test"]) == (2, 3, 500)
    assert (got["train_steps"], got["train_examples"], got["train_seconds"]) == (1100.0, 32000.0, 10.0)
    assert (got["se"], got["df"], got["ci95"]) == (0.0, 1.0, 0.0)  # no spread at all: S − 1 degrees of freedom


def test_a_table_without_seed_or_qualifier_columns_still_reads(tmp_path):
    old = _table([_row("04_prototypical_networks", "protonet"), _row("00_background", "pretrain_finetune")])
    old = old.drop(columns=["seed", "budget", "trained_on", "ci95", "n_test"])
    r = claims.Results(old)
    a = r.row("04_prototypical_networks", "protonet", *OMNIGLOT)
    assert pd.isna(a["seed"]) and pd.isna(a["trained_on"]) and r.budget(a).seeds == (0,)
    u = r.evidence("s", a, r.row("00_background", "pretrain_finetune", *OMNIGLOT)).unpaired
    assert u.mean == 0.0 and math.isinf(u.se) and u.df is None
    assert claims._missing(pd.NA) and claims._missing(float("nan")) and claims._missing(None)
    assert not claims._missing([1.0, 2.0]) and not claims._missing("nan") and not claims._missing(0)


def test_qualified_and_hand_built_rows_find_their_seeds(tmp_path):
    cifar = ("cifar_fs", 5, 1)
    rows = [_row("04_prototypical_networks", "protonet", cifar, seed=s, seconds=10.0 + s) for s in (0, 1)]
    rows += [_row("04_prototypical_networks", "protonet", cifar, seed=s, seconds=99.0, trained_on="omniglot")
             for s in (4, 5, 6)]
    r = _results(tmp_path, rows)
    moved = r.row("04_prototypical_networks", "protonet", *cifar, trained_on="omniglot")
    assert r.budget(moved).seeds == (4, 5, 6) and r.budget(moved).seconds == (99.0,) * 3
    bare = pd.Series({"notebook": "04_prototypical_networks", "method": "protonet", "dataset": "cifar_fs", "ways": 5,
                      "shots": 1, "value": 50.0})
    assert r.budget(bare).seeds == (0, 1)  # accuracy, study scale, no qualifiers: the home rows
    assert r.budget(pd.Series({**bare, "trained_on": "omniglot"})).seeds == (4, 5, 6)
    assert r.group(pd.Series({**bare, "method": "maml"})).method.tolist() == ["maml"]  # not in the table: itself
    # a hand-built row's metric and scale name its rows
    other = _results(tmp_path / "other", [_row("13_drug_discovery", "maml", ("tox21", 2, 10), metric="roc_auc",
                                               seed=s) for s in (1, 2)]
                     + [{**_row("04_prototypical_networks", "protonet", cifar, seed=s), "scale": "paper"}
                        for s in (7, 8)])
    assert other.budget(pd.Series({"notebook": "13_drug_discovery", "method": "maml", "dataset": "tox21", "ways": 2,
                                   "shots": 10, "metric": "roc_auc"})).seeds == (1, 2)
    assert other.budget(pd.Series({**bare, "scale": "paper"})).seeds == (7, 8)


def test_versus_baseline_reads_the_named_baseline_at_the_same_protocol(tmp_path):
    rows = [_row("09_maml", "maml_transductive_15q", value=60.0),
            _row("00_background", "nearest_centroid_transductive_15q", value=57.0),
            _row("00_background", "pretrain_finetune_transductive_15q", value=50.0),
            _row("00_background", "nearest_centroid", value=10.0)]
    r = _results(tmp_path, rows)
    maml = r.row("09_maml", "maml_transductive_15q", *OMNIGLOT)
    assert r.versus_baseline("s", maml, "maml").unpaired.mean == pytest.approx(10.0)
    assert r.versus_baseline("s", maml, "maml", baseline="nearest_centroid").unpaired.mean == pytest.approx(3.0)
    e = r.versus_baseline("s", maml, "maml", baseline="nearest_centroid", notebook="04_x")
    assert not e.measured and e.missing.startswith("no nearest_centroid_transductive_15q row in 04_x")


def test_judge_all_tabulates_budgets_seeds_and_margins_and_counts_verdicts(tmp_path):
    rows = [_row("10_fomaml", "fomaml_transductive_15q", value=90.0, seed=s, steps=500) for s in (0, 1)]
    rows += [_row("09_maml", "maml_transductive_15q", value=90.2, seconds=180.0)]
    table = claims.judge_all(_results(tmp_path, rows))
    assert list(table.columns) == ["chapter", "claim", "experiment", "rule", "verdict", "margin", "budget_a",
                                   "budget_b", "seeds_a", "seeds_b", "evidence", "missing"]
    assert len(table) == len(claims.CLAIMS)
    fomaml = table[table.claim.str.startswith("First-order MAML")].iloc[0]
    assert fomaml.verdict == "holds" and fomaml.margin == "±1 (omniglot), ±2 (cifar_fs)"
    assert fomaml.budget_a == "fomaml_transductive_15q (10): 500 steps, 32,000 examples, 60 s, 2 seeds"
    assert fomaml.budget_b == "maml_transductive_15q (09): 1,000 steps, 32,000 examples, 180 s, 1 seed"
    assert (fomaml.seeds_a, fomaml.seeds_b) == ("2", "1")
    assert "(equal meta-steps)" in fomaml.evidence
    assert fomaml.evidence.startswith("holds (equal meta-steps): FOMAML within the margin of MAML in 1 of 1, outside "
                                      "it in 0, unreachable in 0, inconclusive in 0 (omniglot 5w1s -0.20 ± ")
    rest = table[~table.claim.str.startswith("First-order MAML")]
    assert set(rest.verdict) == {"not measured"} and set(rest.budget_b) == {"–"}
    assert table.iloc[0].evidence == table.iloc[0].missing == "its rows are not in results.csv" and fomaml.missing == ""
    # a measured claim with a setting not measured names why: here MAML vs pre-training without the transductive row
    maml = table[table.claim.str.startswith("MAML beats pre-training + fine-tuning")].iloc[0]
    assert maml.verdict == "not measured" and "no pretrain_finetune_transductive_15q row" in maml.missing
    counts = claims.count_verdicts(table)
    assert list(counts) == list(claims.VERDICTS) and counts["holds"] == 1
    assert counts["not measured"] == len(claims.CLAIMS) - 1 and sum(counts.values()) == len(claims.CLAIMS)


def test_compact_sides_list_settings_only_where_budgets_differ():
    def verdict(setting, budget, seeds):
        b = claims.Budget(budget, tuple(range(seeds)), (1.0,), (2.0,), (3.0,))
        return claims.SettingVerdict(Evidence(setting, "omniglot", _episodes(1), a=(b,), b=(b,)), "A")
    same = [verdict("s1", "x", 1), verdict("s2", "x", 1)]
    assert claims._sides(same, "a") == ("x: 1 steps, 2 examples, 3 s, 1 seed", "1")
    differ = [verdict("s1", "x", 1), verdict("s2", "y", 3)]
    assert claims._sides(differ, "b") == ("s1: x: 1 steps, 2 examples, 3 s, 1 seed; s2: y: 1 steps, 2 examples, "
                                          "3 s, 3 seeds", "1–3")
    assert claims._sides([claims.SettingVerdict(Evidence("s", "omniglot", missing="m"), "not measured")], "a") == \
        ("–", "–")
    assert claims._sides([verdict("s1", "x", 1), verdict("s2", "x", 3), verdict("s3", "x", 2)], "a")[1] == "1–3"


def test_count_verdicts_by_kind():
    counts = claims.count_verdicts(["holds", "holds in 3 of 6, behind in 2", "holds in 1 of 2, outside the margin in 0",
                                    "does not hold here", "unreachable", "not measured", "inconclusive here"])
    assert counts == {"holds": 1, "holds in k of n": 2, "does not hold here": 1, "inconclusive here": 1,
                      "unreachable": 1, "not measured": 1}
    assert claims.count_verdicts([]) == dict.fromkeys(claims.VERDICTS, 0)
    with pytest.raises(ValueError, match="not a verdict"):
        claims.count_verdicts(["mostly holds"])


def test_bad_claims_are_refused():
    with pytest.raises(ValueError, match="rule must be one of"):
        _claim("ties")
    with pytest.raises(ValueError, match="margin is > 0"):
        _claim("matches", margins={"omniglot": 0.0})
    with pytest.raises(ValueError, match="margin is > 0"):
        _claim("matches", relative_margin=0.0)
    with pytest.raises(ValueError, match="no evidence"):
        judge(_claim("beats"), [])
    with pytest.raises(ValueError, match="no margin for fsmol"):
        judge(_claim("matches"), [Evidence("fsmol k=16", "fsmol", _episodes(0))])
    with pytest.raises(ValueError, match="confidence level"):
        Unpaired(0.0, 1.0, 10.0).interval(1.0)
    assert stats.MARGINS == {"omniglot": 1.0, "cifar_fs": 2.0}
    assert _claim("beats").budget == ""


def test_every_claim_of_the_deck_is_judged_on_the_committed_results():
    """The catalogue runs on reports/results.csv and the chapters' per-unit files (of either layout): every claim
    gets one verdict by its rule, the shared-episode claims pair, and every sentence prints the rows' budgets."""
    root = Path(__file__).resolve().parents[1]
    table = pd.read_csv(root / "reports/results.csv", dtype={c: "Int64" for c in INTS})  # old files lack some
    verdicts = claims.judge_all(claims.Results(table, root / "reports/episodes"))
    assert len(verdicts) == len(claims.CLAIMS) and set(verdicts.rule) <= set(claims.RULES)
    assert sum(claims.count_verdicts(verdicts).values()) == len(claims.CLAIMS)  # every verdict of a known kind
    fomaml = verdicts[verdicts.claim.str.startswith("First-order MAML")].iloc[0]
    assert fomaml.verdict != "not measured" and "unpaired" not in fomaml.evidence and "paired over" in fomaml.evidence
    assert " s, 1 seed" in fomaml.evidence and fomaml.seeds_a != "–" and fomaml.margin.startswith("±1")
