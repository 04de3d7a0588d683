"""The one decision rule behind every verdict: a paired t-test over units of evidence.

A unit is one (base model, pretraining seed) pair. Each claim reduces the measurements of a unit to
one number, its effect, signed so that a positive effect is what the paper claims. Finetuning seeds,
learning rates and checkpoints are points *inside* a unit; they never count as extra units, since
they share the unit's pretraining noise.

Over the n units the effects e_1..e_n are tested with a two-sided one-sample t-test of mean 0 at
level `level` (two-sided 0.05 by default, so each direction 0.025):

    mean ± t_{1-level/2, n-1} · sd / √n   is the interval reported beside the effect;
    "holds"          the interval lies above 0 and the mean is at least the margin;
    "does not hold"  the interval lies below 0 and the mean is at most −margin;
    "inconclusive"   otherwise, or with fewer than `min_units` units (never decisive then: the
                     verdict names the direction seen and how many units would be needed).

The margin is the metric's resolution (a share over n points moves in steps of 1/n; an exact-match
rate has a binomial error), so no verdict rests on a difference the metric cannot resolve.
The rule is symmetric, and more units can only narrow the interval. Its error rates are measured by
simulation in tests/report/test_verdict_calibration.py.

Claims with several required parts combine symmetrically: "holds" when every measured part holds,
"does not hold" when every measured part fails, otherwise "inconclusive"; a part that was not
measured does not downgrade the measured ones (`combine`). A claim stated "whichever the base"
(claims 2 and 3) combines its per-base parts by `every_part` instead: it holds only when every
part holds, and one decisively reversed part is enough for "does not hold", since the claim says
it is true on every base.

"Units needed" is a power statement: the smallest n at which a test of this rule would decide in
80% of studies if the seen mean and spread were the truth (see `power`), not the n
at which the seen mean would just clear the interval (that n decides only about half the time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
PARTIAL = "partial"  # every measured part holds, but a required part was not measured
LEVEL = 0.05  # two-sided level of the t-test over units
MIN_UNITS = 3  # fewer units than this never give a decisive verdict
MAX_UNITS_ESTIMATE = 50  # "units needed" estimates stop here
POWER = 0.8  # "units needed" is the n that decides this often when the seen effect is the truth


@dataclass
class Decision:
    """The outcome of the test over units, with what a report needs to show it."""

    status: str
    mean: float = float("nan")
    low: float = float("nan")  # the (1 − level) interval of the mean effect
    high: float = float("nan")
    n_units: int = 0
    p_value: float = float("nan")
    margin: float = 0.0
    level: float = LEVEL
    needed: int | None = None  # units that would make the seen effect decisive (an estimate)
    positive: int = 0  # units whose effect is above the margin / below −margin
    negative: int = 0

    def text(self) -> str:
        if self.status == NOT_MEASURED:
            return NOT_MEASURED
        head = f"{self.status}: effect {self.mean:+.3f}"
        if self.n_units >= 2 and math.isfinite(self.low):
            head += f" [{self.low:+.3f}, {self.high:+.3f}]"
        head += f" over {self.n_units} unit(s) ({self.positive} +, {self.negative} −)"
        if self.status == INCONCLUSIVE:
            seen = "as claimed" if self.mean > 0 else "against the claim" if self.mean < 0 else "none"
            head += f"; direction seen: {seen}"
            if self.needed is not None:
                head += f"; about {self.needed} units would decide it in {POWER:.0%} of studies"
        return head


def _t(df: int, level: float) -> float:
    return float(stats.t.ppf(1.0 - level / 2.0, df))


def power(mean: float, sd: float, n: int, margin: float = 0.0, level: float = LEVEL) -> float:
    """Chance that n units decide in the direction of `mean` when the per-unit effects are
    N(mean, sd²): P(|mean_hat| > max(margin, t_{1−level/2, n−1} · s/√n)), the two conditions of
    `decide`. mean_hat ~ N(|mean|, sd²/n) is independent of s, and (n − 1) s²/sd² ~ χ²(n − 1), so
    the chance is E_s[Φ((|mean| − max(margin, t·s/√n)) / (sd/√n))], averaged here over 400
    quantiles of s (exact up to that quadrature)."""
    if n < 2 or not math.isfinite(mean) or not math.isfinite(sd):
        return float("nan")
    if sd <= 0:
        return 1.0 if abs(mean) >= margin and mean != 0 else 0.0
    q = (np.arange(400) + 0.5) / 400
    s = sd * np.sqrt(stats.chi2.ppf(q, n - 1) / (n - 1))
    bar = np.maximum(margin, _t(n - 1, level) * s / math.sqrt(n))
    return float(np.mean(stats.norm.sf((bar - abs(mean)) / (sd / math.sqrt(n)))))


def units_needed(mean: float, sd: float, margin: float = 0.0, level: float = LEVEL,
                 min_units: int = MIN_UNITS, target: float = POWER) -> int | None:
    """Smallest n ≥ min_units whose `power` reaches `target` if the seen mean and spread were the
    truth; None when the mean is within the margin (no number of units would decide it) or the n
    is past MAX_UNITS_ESTIMATE."""
    if not math.isfinite(mean) or abs(mean) <= max(margin, 1e-12):
        return None
    if not math.isfinite(sd) or sd <= 0:
        return min_units
    for n in range(min_units, MAX_UNITS_ESTIMATE + 1):
        if power(mean, sd, n, margin, level) >= target:
            return n
    return None


def decide(effects: Sequence[float], margin: float = 0.0, level: float = LEVEL,
           min_units: int = MIN_UNITS) -> Decision:
    """The verdict of one effect measured once per unit (positive = as the paper claims)."""
    e = np.asarray([x for x in effects if x is not None and math.isfinite(x)], dtype=float)
    n = len(e)
    if n == 0:
        return Decision(NOT_MEASURED, margin=margin, level=level)
    mean = float(e.mean())
    pos, neg = int(np.sum(e >= margin if margin > 0 else e > 0)), int(np.sum(e <= -margin if margin > 0 else e < 0))
    d = Decision(INCONCLUSIVE, mean=mean, n_units=n, margin=margin, level=level, positive=pos, negative=neg)
    if n < 2:
        d.needed = min_units if abs(mean) >= margin and mean != 0 else None
        return d
    sd = float(e.std(ddof=1))
    half = _t(n - 1, level) * sd / math.sqrt(n)
    d.low, d.high = mean - half, mean + half
    if sd > 0:
        d.p_value = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    else:
        d.p_value = 0.0 if mean != 0 else 1.0
    if n >= min_units:
        if d.low > 0 and mean >= margin and mean > 0:
            d.status = HOLDS
        elif d.high < 0 and mean <= -margin and mean < 0:
            d.status = FAILS
    if d.status == INCONCLUSIVE:
        d.needed = units_needed(mean, sd, margin, level, min_units)
    return d


def combine(statuses: Sequence[str]) -> str:
    """Symmetric combination of the required parts of a claim (see the module docstring)."""
    measured = [s for s in statuses if s != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    if all(s == HOLDS for s in measured):
        return HOLDS
    if all(s == FAILS for s in measured):
        return FAILS
    return INCONCLUSIVE


def every_part(statuses: Sequence[str]) -> str:
    """A claim that must be true on every base: "does not hold" when any part is decisively
    reversed, "holds" when every part holds, "partial" when every measured part holds but a
    required one was not measured, otherwise "inconclusive"."""
    measured = [s for s in statuses if s != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    if any(s == FAILS for s in measured):
        return FAILS
    if all(s == HOLDS for s in measured):
        return HOLDS if len(measured) == len(statuses) else PARTIAL
    return INCONCLUSIVE
