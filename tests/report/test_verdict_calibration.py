"""The verdict engine's error rates, measured on simulated tables whose truth is known.

For each truth (no effect, the paper's effect, the reverse) and 1, 3 and 5 pretraining seeds,
200 sets of tables (tests/report/simulate.py) go through `all_verdicts`, and the share of each
verdict is counted per claim. Required (issue 12):
- no effect: a decisive verdict ("holds" or "does not hold") in at most 10% of tables, at every
  seed count;
- a clear effect with 3 seeds: "holds" in at least 80%; with 5 seeds at least as often as with 3;
- a reversed effect with 3 seeds: "does not hold" in at least 80%;
- 1 seed: never decisive (2 units at most, fewer than the test needs).
The rates printed by `pytest -s` are the figures in docs/BENCHMARKS.md.

Claim 2's hard truths (issue 21), written down before the code that decides them. Claim 2 says
the pretraining family's full-finetuning frontier is the best *on every base*. It is false when,
on some base family, a cross family's frontier is at least as good over the forgetting window:
- "main": Muon finetuning better on both bases (the AdamW bases reversed): must come out
  "does not hold" in at least 80% of studies with 3 seeds per base; its consistency effect is
  zero and must not be decided;
- "reversed": each base's cross family better: "does not hold" at least 80% with 3 seeds.
Truths under which no verdict may be decisive in more than 10% of studies, at 3, 6 and 12 units
per base, and more units must not raise that rate (within Monte-Carlo slack SLACK):
- "none": equal frontiers, the cross family about 1.5x faster;
- "muon_fast", "adamw_fast": equal frontiers, one finetuning family three times faster on every
  base, both ways round; "same_fast", "cross_fast": the same family (or the cross family) three
  times faster on every base, a speed difference that the consistency effect cannot cancel;
- "crossing", "crossing_rev": frontiers that cross inside the window, with zero mean gap over it.
"claimed" (the paper's effect, clear) must hold in at least 80% with 3 seeds per base; the power
at the size the 2M-token study measured ("measured": per-unit d ≈ 0.8) is printed at 3, 6 and 12.
The studies record dense early evaluation (simulate.DENSE); benchmarks/verdict_calibration.py
prints the same tables for stores evaluated every N steps only.
"""

from collections import Counter

import numpy as np
import pytest
from simulate import claim2_gaps, tables

from forgetless.report.per_base import decide_gaps
from forgetless.report.statistics import FAILS, HOLDS, INCONCLUSIVE, decide, power, units_needed
from forgetless.report.verdicts import FRONTIER_MARGIN, all_verdicts

N_TABLES = 200
CLAIMS = range(1, 8)


@pytest.fixture(scope="module")
def rates() -> dict[tuple[int, int], dict[int, Counter]]:
    rng = np.random.default_rng(2026)
    out = {}
    for truth in (0, 1, -1):
        for seeds in (1, 3, 5):
            counts = {c: Counter() for c in CLAIMS}
            for _ in range(N_TABLES):
                for v in all_verdicts(tables(truth, seeds, rng)):
                    counts[v.claim][v.status] += 1
            out[(truth, seeds)] = counts
            print(f"truth {truth:+d}, {seeds} seed(s): " + "; ".join(
                f"C{c} holds {k[HOLDS] / N_TABLES:.1%} fails {k[FAILS] / N_TABLES:.1%}"
                for c, k in counts.items()))
    return out


@pytest.mark.parametrize("seeds", [1, 3, 5])
@pytest.mark.parametrize("claim", CLAIMS)
def test_no_effect_rarely_gives_a_decisive_verdict(rates, claim, seeds):
    k = rates[(0, seeds)][claim]
    assert (k[HOLDS] + k[FAILS]) / N_TABLES <= 0.10


@pytest.mark.parametrize("claim", CLAIMS)
def test_a_clear_effect_is_found_with_three_seeds(rates, claim):
    assert rates[(1, 3)][claim][HOLDS] / N_TABLES >= 0.80
    assert rates[(1, 3)][claim][FAILS] == 0


@pytest.mark.parametrize("claim", CLAIMS)
def test_five_seeds_never_have_less_power_than_three(rates, claim):
    assert rates[(1, 5)][claim][HOLDS] >= rates[(1, 3)][claim][HOLDS]
    assert rates[(-1, 5)][claim][FAILS] >= rates[(-1, 3)][claim][FAILS]


@pytest.mark.parametrize("claim", CLAIMS)
def test_a_reversed_effect_is_found_with_three_seeds(rates, claim):
    assert rates[(-1, 3)][claim][FAILS] / N_TABLES >= 0.80
    assert rates[(-1, 3)][claim][HOLDS] == 0


@pytest.mark.parametrize("truth", [0, 1, -1])
def test_one_seed_is_never_decisive(rates, truth):
    for claim in CLAIMS:
        assert rates[(truth, 1)][claim][INCONCLUSIVE] == N_TABLES


def test_decide_by_hand():
    # Three units 0.30, 0.35, 0.40: mean 0.35, sd 0.05, t(2) at 0.975 = 4.3027:
    # interval 0.35 ± 4.3027 · 0.05 / √3 = [0.2258, 0.4742].
    d = decide([0.30, 0.35, 0.40], margin=0.02)
    assert d.status == HOLDS
    assert d.low == pytest.approx(0.35 - 4.302653 * 0.05 / 3**0.5, abs=1e-5)
    assert d.high == pytest.approx(0.35 + 4.302653 * 0.05 / 3**0.5, abs=1e-5)
    assert decide([-0.30, -0.35, -0.40], margin=0.02).status == FAILS
    # The interval contains 0: inconclusive, however large the mean.
    assert decide([0.9, -0.2, 0.5]).status == INCONCLUSIVE
    # Below the margin: inconclusive even when the interval excludes 0.
    assert decide([0.010, 0.011, 0.012], margin=0.02).status == INCONCLUSIVE
    # Two units are never decisive, whatever they say; the verdict names the units needed.
    two = decide([0.5, 0.5], margin=0.02)
    assert two.status == INCONCLUSIVE and two.needed == 3 and "as claimed" in two.text()
    assert decide([]).status == "not measured"


def test_units_needed_gives_80_percent_power():
    # Independent reference: simulate decide() on N(0.1, 0.1²) effects. units_needed is the first n
    # whose power reaches 80%, so the simulated rate at that n is at least 80% and below it at
    # n − 2 (2000 draws: Monte-Carlo sd 0.009).
    n = units_needed(0.1, 0.1)
    rng = np.random.default_rng(7)

    def rate(k):
        return np.mean([decide(rng.normal(0.1, 0.1, k)).status == HOLDS for _ in range(2000)])

    assert rate(n) >= 0.78 and rate(n - 2) < 0.80
    for k, margin in ((5, 0.0), (12, 0.05)):  # and power() itself, with and without a margin
        sim = np.mean([decide(rng.normal(0.1, 0.1, k), margin).status == HOLDS for _ in range(4000)])
        assert power(0.1, 0.1, k, margin) == pytest.approx(sim, abs=0.03)
    # Old rule (the n at which the seen mean would just clear the interval, 7) decides about half
    # the time: far below 80%.
    assert rate(7) < 0.70
    assert units_needed(0.001, 0.1, margin=0.02) is None


# ---- claim 2, per base, against the hard truths ------------------------------------------------
N_STUDIES = 200
SIZES = (3, 6, 12)
NULLS = ("none", "muon_fast", "adamw_fast", "same_fast", "cross_fast", "crossing", "crossing_rev")
# Two rates of N_STUDIES studies near 5% differ by more than 0.05 with probability below 2%
# (normal approximation, sd of the difference √(2·0.05·0.95/200) = 0.022).
SLACK = 0.05
NAMES = {"l1->linf": "adamw", "l2->l2": "muon"}


def claim2_study(scenario: str, seeds: int, rng) -> tuple[str, str, str]:
    """(claim status, consistency status, main-effect status) of one simulated study."""
    pb = decide_gaps(claim2_gaps(scenario, seeds, rng), NAMES, FRONTIER_MARGIN, "same family",
                     ("adamw", "muon"))
    shown = {k.split(" ")[0]: d.status for k, d in pb.shown.items()}
    return pb.status, shown["consistency"], shown["main"]


@pytest.fixture(scope="module")
def claim2_rates() -> dict[tuple[str, int], dict[str, Counter]]:
    rng = np.random.default_rng(21)
    out = {}
    plan = [(s, n) for s in NULLS + ("main",) for n in SIZES] + [(s, 3) for s in ("claimed", "reversed")]
    plan += [("measured", n) for n in SIZES]
    for scenario, n in plan:
        counts = {"claim": Counter(), "consistency": Counter(), "main": Counter()}
        for _ in range(N_STUDIES):
            for key, status in zip(counts, claim2_study(scenario, n, rng), strict=True):
                counts[key][status] += 1
        out[(scenario, n)] = counts
        print(f"claim 2, {scenario:12s} {n:2d} seeds/base: " + "; ".join(
            f"{k} holds {c[HOLDS] / N_STUDIES:.1%} fails {c[FAILS] / N_STUDIES:.1%}" for k, c in counts.items()))
    return out


def _decisive(c: Counter) -> float:
    return (c[HOLDS] + c[FAILS]) / N_STUDIES


@pytest.mark.parametrize("scenario", NULLS)
def test_claim2_nulls_rarely_decide_and_more_units_do_not_help_them(claim2_rates, scenario):
    for what in ("claim", "consistency"):
        rates = [_decisive(claim2_rates[(scenario, n)][what]) for n in SIZES]
        assert max(rates) <= 0.10, (what, rates)
        assert rates[1] <= rates[0] + SLACK and rates[2] <= rates[0] + SLACK, (what, rates)


def test_a_main_effect_is_not_consistency_and_the_claim_does_not_hold(claim2_rates):
    assert claim2_rates[("main", 3)]["claim"][FAILS] / N_STUDIES >= 0.80
    assert claim2_rates[("main", 3)]["claim"][HOLDS] == 0
    rates = [_decisive(claim2_rates[("main", n)]["consistency"]) for n in SIZES]
    assert max(rates) <= 0.10 and rates[2] <= rates[0] + SLACK, rates
    assert claim2_rates[("main", 3)]["main"][HOLDS] / N_STUDIES >= 0.80  # and the main effect is found


def test_claim2_clear_truths_are_found_with_three_seeds_per_base(claim2_rates):
    assert claim2_rates[("claimed", 3)]["claim"][HOLDS] / N_STUDIES >= 0.80
    assert claim2_rates[("claimed", 3)]["claim"][FAILS] == 0
    assert claim2_rates[("reversed", 3)]["claim"][FAILS] / N_STUDIES >= 0.80
    assert claim2_rates[("reversed", 3)]["claim"][HOLDS] == 0


def test_power_at_the_measured_size_grows_with_seeds(claim2_rates):
    power = [claim2_rates[("measured", n)]["claim"][HOLDS] / N_STUDIES for n in SIZES]
    print("claim 2 power at the measured size (d ≈ 0.8 per unit), 3/6/12 seeds per base:", power)
    assert power[0] <= power[1] + SLACK and power[1] <= power[2] + SLACK and power[2] > power[0]
    assert max(claim2_rates[("measured", n)]["claim"][FAILS] for n in SIZES) / N_STUDIES <= 0.025


def test_the_fast_route_is_the_claim2_verdict():
    # The rates above skip the row grouping; on the same draws claim2_same_optimizer agrees.
    from simulate import claim2_points

    from forgetless.report.verdicts import claim2_same_optimizer
    for scenario in ("none", "main", "measured"):
        fast = decide_gaps(claim2_gaps(scenario, 4, np.random.default_rng(5)), NAMES, FRONTIER_MARGIN,
                           "same family", ("adamw", "muon"))
        full = claim2_same_optimizer(claim2_points(scenario, 4, np.random.default_rng(5)))
        assert full.status == fast.status
        assert [d.mean for d in full.part_decisions.values()] == pytest.approx([d.mean for d in fast.parts.values()])
