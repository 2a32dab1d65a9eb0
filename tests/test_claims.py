"""The claims' rules on synthetic rows: a case per rule that flips its verdict."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn.study import claims
from metalearn.study.claims import Claim, Evidence, judge, paired_evidence

RNG = np.random.default_rng(0)
BUDGET = "the study budget (about 1% of Finn et al.'s tasks)"


def _episodes(mean: float, sd: float = 8.0, n: int = 600) -> np.ndarray:
    x = RNG.normal(0, sd, n)
    return x - x.mean() + mean


def _claim(rule: str, **kw) -> Claim:
    return Claim("10", "A vs B", "A", "B", rule, "six settings", BUDGET, **kw)


def test_beats_holds_in_every_setting_in_some_or_in_none():
    ahead = [Evidence("omniglot 5w1s", "omniglot", _episodes(2)), Evidence("omniglot 5w5s", "omniglot", _episodes(1.5))]
    v = judge(_claim("beats"), ahead)
    assert v.verdict == "holds" and v.passed == 2
    assert v.sentence().startswith(f"holds at {BUDGET}: A ahead in 2 of 2")
    mixed = [ahead[0], Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(0.1))]
    assert judge(_claim("beats"), mixed).verdict == "holds in 1 of 2"
    behind = [Evidence("omniglot 5w1s", "omniglot", _episodes(-2)), Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(0))]
    v = judge(_claim("beats"), behind)
    assert v.verdict == "does not hold here" and "behind in 1, not distinguishable in 1" in v.sentence()


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


def test_matches_needs_equivalence_not_a_ci_that_covers_zero():
    close = [Evidence("omniglot 5w1s", "omniglot", _episodes(0.2)), Evidence("cifar_fs 5w1s", "cifar_fs", _episodes(-0.5))]
    v = judge(_claim("matches"), close)
    assert v.verdict == "holds" and all(s.outcome == "equivalent" for s in v.settings)
    assert all(s.interval.level == pytest.approx(0.9) for s in v.settings)
    # the same means on 10 episodes: the interval covers 0 but also the margin, so no match is read from it
    noisy = [Evidence(e.setting, e.dataset, _episodes(e.differences.mean(), n=10)) for e in close]
    v = judge(_claim("matches"), noisy)
    assert v.verdict == "inconclusive here" and {s.outcome for s in v.settings} == {"inconclusive"}
    far = [Evidence("omniglot 5w1s", "omniglot", _episodes(-3.0))]
    assert judge(_claim("matches"), far).settings[0].outcome == "different"
    # a wider margin the claim states turns the same evidence into a match
    assert judge(_claim("matches", margins={"omniglot": 4.0}), far).verdict == "holds"


def test_unpaired_rows_are_judged_on_their_combined_interval_and_say_so():
    e = Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=(2.0, 1.0))
    v = judge(_claim("beats"), [e])
    assert v.verdict == "holds" and "unpaired" in v.sentence()
    assert judge(_claim("beats"), [Evidence("omniglot 5w1s", "omniglot", paired=False, unpaired=(0.5, 1.0))]).verdict \
        == "inconclusive here"


def test_bad_claims_are_refused():
    with pytest.raises(ValueError, match="rule must be one of"):
        _claim("ties")
    with pytest.raises(ValueError, match="names the budget"):
        Claim("10", "s", "A", "B", "beats", "e", "")
    with pytest.raises(ValueError, match="no evidence"):
        judge(_claim("beats"), [])
    with pytest.raises(ValueError, match="no margin for fsmol"):
        judge(_claim("matches"), [Evidence("fsmol k=16", "fsmol", _episodes(0))])
    with pytest.raises(ValueError, match="same episodes"):
        paired_evidence("s", "omniglot", np.zeros(5), np.zeros(6))
    assert claims.MARGINS == {"omniglot": 1.0, "cifar_fs": 2.0}


def test_every_claim_of_the_deck_is_judged_on_the_committed_results():
    """The catalogue runs on reports/results.csv and the chapters' episodes: every claim gets one verdict by its rule,
    and the family claims pair on the shared episodes."""
    from pathlib import Path

    import pandas as pd

    from metalearn.core.results import INT_COLUMNS

    root = Path(__file__).resolve().parents[1]
    table = pd.read_csv(root / "reports/results.csv", dtype={c: "Int64" for c in INT_COLUMNS})
    verdicts = claims.judge_all(claims.Results(table, root / "reports/episodes"))
    assert len(verdicts) == len(claims.CLAIMS) and set(verdicts.rule) <= set(claims.RULES)
    assert all(v in ("holds", "does not hold here", "inconclusive here", "not measured") or v.startswith("holds in ")
               for v in verdicts.verdict)
    family = verdicts[verdicts.claim.str.startswith("Metric-based")].evidence.iloc[0]
    assert "unpaired" not in family and claims.STUDY in family  # paired, and the budget is named
