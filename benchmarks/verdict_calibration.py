"""Claim 2's verdict engine against the hard truths of issue 21 (tables for docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/verdict_calibration.py [N_STUDIES]   (default 200)

Prints, for simulated studies with a known truth (tests/report/simulate.py):
1. the null bias of the per-unit frontier gap: the step envelope over checkpoints (the rule
   before issue 21) against the envelope over interpolated run paths, for stores evaluated every
   N steps (EVEN) and with dense early evaluation (DENSE); the margin is derived from it;
2. how often each truth gives each verdict at 3, 6 and 12 seeds per base: the claim (per-base
   parts), the consistency effect, and the pooled test of the old rule for comparison;
3. the power at the size the 2M-token study measured, per part and for the claim, beside
   statistics.power / units_needed for that mean and spread.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "report"))
from simulate import DENSE, EVEN, claim2_gaps, claim2_units  # noqa: E402

from forgetless.report.effects import (  # noqa: E402
    FORGETTING_WINDOW,
    batch_front,
    frontier_gap,
    path_gap,
    segments,
)
from forgetless.report.per_base import decide_gaps  # noqa: E402
from forgetless.report.statistics import FAILS, HOLDS, decide, power, units_needed  # noqa: E402
from forgetless.report.verdicts import FRONTIER_MARGIN  # noqa: E402

NAMES = {"l1->linf": "adamw", "l2->l2": "muon"}
NULLS = ("none", "muon_fast", "adamw_fast", "same_fast", "cross_fast", "crossing", "crossing_rev")
SIZES = (3, 6, 12)


def linear_gap(same: np.ndarray, other: np.ndarray, f0: float, window: float = FORGETTING_WINDOW) -> float:
    """The path gap with paths interpolated linearly in (F, L) instead of (√(F − F0), L)."""
    a, b = segments(list(same))[None], segments(list(other))[None]
    reach = min(same[..., 0].max(), other[..., 0].max())
    grid = np.linspace(f0, min(f0 + window, reach), 64)[None]
    return float((batch_front(b, grid) - batch_front(a, grid)).mean())


def bias(scenario: str, steps, rng, studies: int = 40, seeds: int = 6) -> tuple[float, float, float, float]:
    """Mean per-unit gap under a truth: step envelope, linear paths, √ paths; sd of the √ one."""
    step, linear, path = [], [], []
    for _ in range(studies):
        for _b, _c, _s, f0, _l0, same, other in claim2_units(scenario, seeds, rng, steps):
            a, b = same[:, 1:].reshape(-1, 2), other[:, 1:].reshape(-1, 2)  # checkpoints, step 0 left out
            step.append(frontier_gap(a, b))
            linear.append(linear_gap(same, other, f0))
            path.append(path_gap(list(same), list(other), f0))
    return float(np.mean(step)), float(np.mean(linear)), float(np.mean(path)), float(np.std(path, ddof=1))


def rates(scenario: str, seeds: int, steps, rng, n: int) -> dict[str, Counter]:
    out = {"claim": Counter(), "consistency": Counter(), "pooled": Counter(), "parts": Counter()}
    for _ in range(n):
        gaps = claim2_gaps(scenario, seeds, rng, steps)
        pb = decide_gaps(gaps, NAMES, FRONTIER_MARGIN, "same family", ("adamw", "muon"))
        out["claim"][pb.status] += 1
        out["consistency"][next(d for k, d in pb.shown.items() if k.startswith("consistency")).status] += 1
        out["pooled"][decide([e for g in gaps.values() for e in g.values()], FRONTIER_MARGIN).status] += 1
        for d in pb.parts.values():
            out["parts"][d.status] += 1
    return out


def pct(c: Counter, n: int, what: str) -> str:
    return f"{100 * c[what] / n:5.1f}%"


def main(n: int = 200) -> None:
    t0 = time.time()
    rng = np.random.default_rng(2121)
    print(f"frontier margin {FRONTIER_MARGIN} nats; {n} studies per row\n")
    print("1. Null bias of the per-unit gap (nats; positive = same family looks better), 6 seeds/base x 40 studies")
    print("| truth | schedule | step envelope | paths, linear in F | paths, linear in √(F − F0) (the rule) | sd per unit |")
    print("|---|---|---|---|---|---|")
    # muon_fast / adamw_fast are cross_fast on one base family and same_fast on the other: their
    # biases cancel in a mean over both bases, so the table shows the same-sign truths.
    for scenario in ("none", "same_fast", "cross_fast", "crossing", "crossing_rev"):
        for name, steps in (("every N", EVEN), ("dense early", DENSE)):
            s, lin, p, sd = bias(scenario, steps, rng)
            print(f"| {scenario} | {name} | {s:+.4f} | {lin:+.4f} | {p:+.4f} | {sd:.4f} |")
    for name, steps in (("dense early", DENSE), ("every N", EVEN)):
        print(f"\n2. Verdicts per truth, {name} evaluation (claim = per-base parts; pooled = the old single test)")
        print("| truth | seeds/base | claim holds | claim does not hold | consistency decisive | pooled holds | pooled does not hold |")
        print("|---|---|---|---|---|---|---|")
        plan = [(s, k) for s in NULLS + ("main",) for k in SIZES] + [("claimed", 3), ("reversed", 3)]
        for scenario, k in plan:
            c = rates(scenario, k, steps, rng, n)
            dec = (c["consistency"][HOLDS] + c["consistency"][FAILS]) / n
            print(f"| {scenario} | {k} | {pct(c['claim'], n, HOLDS)} | {pct(c['claim'], n, FAILS)} | "
                  f"{100 * dec:5.1f}% | {pct(c['pooled'], n, HOLDS)} | {pct(c['pooled'], n, FAILS)} |")
    print("\n3. Power at the measured size (dense early evaluation)")
    print("| seeds/base | per-unit mean | per-unit sd | d | one part holds (simulated) | "
          "statistics.power | claim holds (both parts) |")
    print("|---|---|---|---|---|---|---|")
    for k in SIZES:
        c = rates("measured", k, DENSE, rng, n)
        units = [e for _ in range(40) for g in claim2_gaps("measured", 12, rng).values() for e in g.values()]
        m, sd = float(np.mean(units)), float(np.std(units, ddof=1))
        print(f"| {k} | {m:+.4f} | {sd:.4f} | {m / sd:.2f} | {pct(c['parts'], 2 * n, HOLDS)} | "
              f"{100 * power(m, sd, k, FRONTIER_MARGIN):5.1f}% | {pct(c['claim'], n, HOLDS)} |")
    print(f"\nunits_needed (80% power, one part) at that mean and spread: {units_needed(m, sd, FRONTIER_MARGIN)}; "
          f"without a margin: {units_needed(m, sd, 0.0)}; both parts at 80% (each at 89.4%): "
          f"{next((k for k in range(3, 51) if power(m, sd, k, FRONTIER_MARGIN) >= 0.894), None)}")
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
