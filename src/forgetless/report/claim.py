"""The verdict record and the helpers every claim shares (see forgetless.report.verdicts).

A claim's parts are of two kinds:
- required parts (`decisions` of `make_verdict`): the statements the claim makes; their statuses
  combine into the claim's status (forgetless.report.statistics.combine);
- shown parts (`shown`): figures the paper reports beside the claim, or that restate another
  claim; printed with their own verdict, never combined into the claim's.

"partial": when every measured required part holds but some required part was not measured (the
study lacks the bases or the task it needs), the claim is "partial", not "holds", and its note
names the missing part. A missing part cannot rescue a reversed part or settle a mixed one, so
"does not hold" and "inconclusive" stand as combined; their note names the missing part too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from forgetless.metrics import X_DEFAULT

from .statistics import HOLDS, LEVEL, NOT_MEASURED, PARTIAL, Decision, combine


@dataclass
class Verdict:
    claim: int
    title: str
    status: str
    ours: str  # our numbers, in one line
    paper: str  # the paper's figure or numbers to set beside ours
    details: list[str] = field(default_factory=list)
    effect: float = float("nan")  # the deciding test's mean effect over units
    low: float = float("nan")  # its interval at `level`
    high: float = float("nan")
    n_units: int = 0
    level: float = LEVEL
    test: str = ""  # what the effect is, in one line
    parts: dict[str, str] = field(default_factory=dict)  # required part -> status ("not measured" included)
    scale_note: str = ""  # why the claim cannot be reached at this scale, when it cannot
    shown: dict[str, str] = field(default_factory=dict)  # shown (not required) part -> status
    missing: list[str] = field(default_factory=list)  # required parts not measured
    part_decisions: dict[str, Decision] = field(default_factory=dict)  # required part -> Decision
    shown_decisions: dict[str, Decision] = field(default_factory=dict)  # shown part -> Decision


def make_verdict(claim: int, title: str, paper: str, test: str, decisions: dict[str, Decision],
                 ours: str, details: list[str], scale_note: str = "",
                 shown: dict[str, Decision] | None = None) -> Verdict:
    """A verdict whose status combines the required parts (`decisions`); effect and interval are
    the first measured required part's. `shown` parts are listed with their verdicts, never combined."""
    parts = {name: d.status for name, d in decisions.items()}
    status = combine(list(parts.values()))
    missing = [name for name, s in parts.items() if s == NOT_MEASURED]
    if missing and status != NOT_MEASURED:
        if status == HOLDS:
            status = PARTIAL
        what = "not measured: " + ", ".join(missing)
        scale_note = f"{what}; {scale_note}" if scale_note else what
    main = next((d for d in decisions.values() if d.status != NOT_MEASURED), None)
    shown = shown or {}
    v = Verdict(claim, title, status, ours, paper, details, test=test, parts=parts,
                scale_note=scale_note, shown={n: d.status for n, d in shown.items()}, missing=missing,
                part_decisions=dict(decisions), shown_decisions=dict(shown))
    if main is not None:
        v.effect, v.low, v.high, v.n_units, v.level = main.mean, main.low, main.high, main.n_units, main.level
    for name, d in reversed(list(shown.items())):
        details.insert(0, f"(shown, not required) {name}: {d.text()}")
    for name, d in reversed(list(decisions.items())):
        details.insert(0, f"{name}: {d.text()}")
    return v


def parts_line(decisions: dict[str, Decision], shown: dict[str, Decision] | None = None) -> str:
    """Every part's verdict and effect in one line, required parts first (a claim's "ours")."""
    def one(name: str, d: Decision) -> str:
        if d.status == NOT_MEASURED:
            return f"{name}: not measured"
        interval = f" [{d.low:+.3f}, {d.high:+.3f}]" if np.isfinite(d.low) else ""
        return f"{name}: {d.status}, {d.mean:+.3f}{interval}"
    lines = [one(n, d) for n, d in decisions.items()]
    lines += [one(f"(shown) {n}", d) for n, d in (shown or {}).items()]
    return "; ".join(lines)


def group(rows: list, *keys: str) -> dict[tuple, list]:
    """Rows (typed, or dicts) grouped by the values of `keys`, groups in the order of their keys."""
    groups: dict[tuple, list] = defaultdict(list)
    for row in rows:
        if isinstance(row, dict):
            groups[tuple(row.get(k) for k in keys)].append(row)
        else:
            groups[tuple(getattr(row, k, None) for k in keys)].append(row)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def base_forgetting(rows: list, x: str = X_DEFAULT) -> float:
    """The base's own value of the forgetting metric x: the first finite step-0 value of the rows."""
    base = [v for r in rows if r.step == 0 and np.isfinite(v := r.value(x))]
    return float(base[0]) if base else float("nan")
