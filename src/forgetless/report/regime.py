"""Is a study in the paper's regime? Two checks the report shows beside every verdict.

- Token ratio: the paper's finetunes use 1.3-10% of the pretraining tokens, and its theory (§3.2)
  is about a small move away from a pretraining minimum. We flag finetunes above MAX_RATIO.
- Grid bracketing: the paper's lr grids always contain the lr that learns best. When a method's
  best learning sits at the top of its grid, the grid does not show that lr, and the frontier may
  be cut short on the learning side.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

MAX_RATIO = 0.20  # presets stay at or below this finetune/pretrain token ratio


@dataclass
class RegimeCheck:
    """Finetune/pretrain token ratios and the grids whose best lr is their top lr."""

    ratios: dict[str, float]  # finetune cell label -> its tokens / its base's pretraining tokens
    unbracketed: list[str]  # "base seed task method: best lr L = the grid's top" lines

    @property
    def max_ratio(self) -> float:
        return max(self.ratios.values(), default=float("nan"))

    def lines(self) -> list[str]:
        out = []
        if self.ratios:
            r = np.array(list(self.ratios.values()))
            over = sum(v > MAX_RATIO for v in r)
            out.append(f"finetune tokens / pretraining tokens: {r.min():.1%}-{r.max():.1%} over {len(r)} "
                       f"finetunes (paper: 1.3-10%; our limit {MAX_RATIO:.0%})"
                       + (f"; {over} above the limit" if over else ""))
        if self.unbracketed:
            out.append(f"{len(self.unbracketed)} grid(s) learn best at their highest lr, so they do "
                       "not bracket the best lr: " + "; ".join(self.unbracketed[:6])
                       + (" ..." if len(self.unbracketed) > 6 else ""))
        return out or ["no finetunes to check"]


def token_ratios(runs: list[dict], store_points: list[dict]) -> dict[str, float]:
    """Tokens of each finished finetune over the pretraining tokens of its base (last eval points)."""
    last: dict[str, int] = {}
    for p in store_points:
        if p.get("tokens") is not None:
            last[p["run_id"]] = max(last.get(p["run_id"], 0), int(p["tokens"]))
    out = {}
    for r in runs:
        base = r.get("base_id")
        if r["kind"] == "finetune" and base and last.get(base) and r["cell_id"] in last:
            out[r["label"]] = last[r["cell_id"]] / last[base]
    return out


def unbracketed_grids(points: list[dict]) -> list[str]:
    """Grids (base, seed, task, method) with ≥ 2 lrs whose best learning is at their top lr."""
    grids: dict[tuple, dict[float, float]] = defaultdict(dict)
    for r in points:
        if r.get("step") == 0 or not np.isfinite(r["learning"]):
            continue
        key = (r["base_optimizer"], r["base_seed"], r["task"], r["method"])
        grids[key][r["lr"]] = min(grids[key].get(r["lr"], np.inf), r["learning"])
    out = []
    for (base, seed, task, method), by_lr in sorted(grids.items(), key=str):
        if len(by_lr) >= 2 and min(by_lr, key=by_lr.get) == max(by_lr):
            out.append(f"{base} seed {seed} {task} {method} (best lr {max(by_lr):g})")
    return out


def check(runs: list[dict], store_points: list[dict], points: list[dict]) -> RegimeCheck:
    return RegimeCheck(token_ratios(runs, store_points), unbracketed_grids(points))
