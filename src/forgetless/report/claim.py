"""The verdict record and the helpers every claim shares (see forgetless.report.verdicts)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .statistics import LEVEL, NOT_MEASURED, Decision, combine


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
    parts: dict[str, str] = field(default_factory=dict)  # part -> status ("not measured" included)
    scale_note: str = ""  # why the claim cannot be reached at this scale, when it cannot


def make_verdict(claim: int, title: str, paper: str, test: str, decisions: dict[str, Decision],
             ours: str, details: list[str], scale_note: str = "") -> Verdict:
    """A verdict whose status combines the parts; effect and interval are the first measured part's."""
    parts = {name: d.status for name, d in decisions.items()}
    main = next((d for d in decisions.values() if d.status != NOT_MEASURED), None)
    v = Verdict(claim, title, combine(list(parts.values())), ours, paper, details, test=test,
                parts=parts, scale_note=scale_note)
    if main is not None:
        v.effect, v.low, v.high, v.n_units, v.level = main.mean, main.low, main.high, main.n_units, main.level
    for name, d in decisions.items():
        details.insert(0, f"{name}: {d.text()}")
    return v


def group(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in keys)].append(row)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def base_forgetting(rows: list[dict]) -> float:
    base = [r["forgetting"] for r in rows if r.get("step") == 0 and np.isfinite(r["forgetting"])]
    return float(base[0]) if base else float("nan")
