"""A forgetting budget for one finetune: keep the checkpoint that learned most within it, stop when
forgetting has left it, roll back with WiSE when nothing stayed within.

The budget b is `0.1` (forgetting may rise 0.1 nats above the base's own loss on the reference,
the step-0 point) or `"5%"` (5% of that loss). It applies to the total and to every source of the
reference (`forgetting_by_source`: prose and code of the stdlib sample, text and code of a folder),
each against its own step-0 loss. At every evaluation after step 0:

    within(p) = every change (total, each source) <= its allowance; a NaN is outside
    kept      = the within point with the lowest learning loss so far (the earlier on a tie); its
                weights are written to <run>/best-within-budget/, a whole Hugging Face checkpoint
    stop      = `patience` evaluations in a row outside: the run stops there and says why

The base (step 0) is within by definition and is never kept: it learned nothing. When no later
evaluation was within, WiSE-FT (Wortsman et al. 2022) is the rollback of last resort: the weights
(1 − α)·θ₀ + α·θ of the base θ₀ and the last weights θ, α found by bisection on [0, 1] over
`WISE_ROUNDS` halvings (α = 0 is the base, within; α = 1 the last point, outside; each halving
evaluates the midpoint and keeps the half whose ends straddle the budget). The largest α found
within is saved there instead and its learning reported.

The same `BudgetTracker` decides for `forgetless finetune` (through the training loop's
`after_eval` hook) and for Hugging Face Trainer users (forgetless.integrations.budget).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetless.train.checkpoint import write_checkpoint
from forgetless.train.rundir import RunResult

KEPT = "best-within-budget"   # the run directory's folder of the kept weights
WISE_ROUNDS = 6               # bisection halvings: α to 1/64
ALL = "all"                   # the total's row in the per-source tables


def describe(budget: float | str) -> str:
    """The budget as the console says it."""
    if isinstance(budget, str) and budget.endswith("%"):
        return f"{budget} of the base's forgetting loss"
    return f"{float(budget):g} nats above the base's forgetting loss"


def allowance(budget: float | str, base_loss: float) -> float:
    """How far (nats) forgetting may rise above `base_loss`: b itself, or b% of the base's loss."""
    if isinstance(budget, str) and budget.endswith("%"):
        return float(budget[:-1]) / 100 * base_loss
    return float(budget)


@dataclass
class Decision:
    keep: bool = False         # this point is the new best within the budget: write its weights
    stop: str | None = None    # stop the run here, for this reason


def _losses(point: dict[str, Any]) -> dict[str, float]:
    """The forgetting losses of a point: the total and each source."""
    out = {ALL: point.get("forgetting")}
    out.update(point.get("forgetting_by_source") or {})
    return {k: (float(v) if isinstance(v, (int, float)) else math.nan) for k, v in out.items()}


@dataclass
class BudgetTracker:
    """Decides, point by point, what the module docstring says."""

    budget: float | str
    patience: int
    base: dict[str, float] | None = None            # step-0 loss of the total and each source
    kept: dict[str, Any] | None = None              # row of the kept point
    last: dict[str, Any] | None = None              # row of the latest point after step 0
    outside: list[int] = field(default_factory=list)  # steps of the current run of points outside
    stopped: str | None = None                      # why the run stopped early

    def __post_init__(self) -> None:
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"budget_patience must be an integer >= 1; got {self.patience!r}")
        allowance(self.budget, 1.0)  # a malformed budget fails here, not at the first evaluation

    def allowances(self) -> dict[str, float]:
        return {k: allowance(self.budget, v) for k, v in (self.base or {}).items()}

    def row(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point's step, learning, forgetting and change per source (sources the base lacks
        are left out), with the names outside the budget."""
        losses, limits = _losses(point), self.allowances()
        changes = {k: losses[k] - self.base[k] for k in limits if k in losses}
        outside = [k for k, c in changes.items() if not c <= limits[k]]  # NaN is outside
        return {"step": point["step"], "learning": point.get("learning"), "forgetting": point.get("forgetting"),
                "forgetting_delta": changes.get(ALL), "changes": changes, "outside": outside}

    def observe(self, point: dict[str, Any]) -> Decision:
        """One eval point, in order; WiSE points (negative steps) are not training and are skipped."""
        if point.get("wise") is not None or point["step"] < 0:
            return Decision()
        if self.base is None:  # the first point is the base (step 0)
            self.base = {k: v for k, v in _losses(point).items() if math.isfinite(v)}
            if ALL not in self.base:
                raise ValueError("forgetting_budget: the base's forgetting loss was not measured")
            return Decision()
        row = self.last = self.row(point)
        if not row["outside"]:
            self.outside = []
            learning = row["learning"]
            better = isinstance(learning, (int, float)) and math.isfinite(learning) and (
                self.kept is None or learning < self.kept["learning"])
            if better:
                self.kept = row
            return Decision(keep=better)
        self.outside.append(row["step"])
        if len(self.outside) >= self.patience and self.stopped is None:
            worst = ", ".join(f"{k} {row['changes'][k]:+.4f} > {self.allowances()[k]:.4f}" for k in row["outside"])
            steps = ", ".join(str(s) for s in self.outside)
            self.stopped = (f"forgetting outside the budget ({describe(self.budget)}) at {len(self.outside)} "
                            f"evaluation{'s' if len(self.outside) > 1 else ''} in a row (step{'s' if len(self.outside) > 1 else ''} "
                            f"{steps}; at step {row['step']}: {worst}), patience {self.patience}")
            return Decision(stop=self.stopped)
        return Decision()

    def replay(self, points: list[dict[str, Any]]) -> None:
        """The state after the points a resumed run recorded before (no weights are written)."""
        for point in sorted(points, key=lambda p: p["step"]):
            self.observe(point)

    def table(self, wise: dict[str, Any] | None = None) -> list[str]:
        """The change per source at the kept point (or the WiSE rollback) and at the last one,
        beside its allowance; a change outside the budget is marked."""
        if self.base is None:
            return []
        kept = wise or self.kept
        cols = [("kept" if wise is None else f"WiSE α {wise['alpha']:g}") + f" (step {kept['step']})", kept]\
            if kept is not None else None
        last = (f"last (step {self.last['step']})", self.last) if self.last is not None else None
        shown = [c for c in (cols, last) if c is not None]
        limits = self.allowances()
        width = max(len(k) for k in [*limits, "source"])
        lines = [f"{'source':<{width}}  {'budget':>8}" + "".join(f"  {name:>22}" for name, _ in shown)]
        for name, limit in limits.items():
            cells = []
            for _, row in shown:
                change = row["changes"].get(name)
                mark = " outside" if name in row["outside"] else ""
                cells.append(f"  {('-' if change is None else f'{change:+.4f}') + mark:>22}")
            lines.append(f"{name:<{width}}  {limit:>8.4f}" + "".join(cells))
        return lines


def keep_checkpoint(run_path: Path, step: int, write_model: Callable[[Path], None],
                    info: dict[str, Any]) -> Path:
    """The weights now as <run>/best-within-budget/: written by the run's checkpoint writer
    (a temporary directory renamed, so a kill never leaves half of one), its trainer state naming
    the step and its numbers instead of an optimizer (nobody resumes from it)."""
    staging = Path(run_path) / f".{KEPT}"
    written = write_checkpoint(staging, step, write_model, {"step": step, "budget": json.dumps(info)}, keep=1)
    final = Path(run_path) / KEPT
    if final.exists():
        shutil.rmtree(final)
    os.replace(written, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def bisect_alpha(measure: Callable[[float], dict[str, Any]], within: Callable[[dict[str, Any]], bool],
                 rounds: int = WISE_ROUNDS) -> tuple[float, dict[str, Any] | None, list[dict[str, Any]]]:
    """(the largest α found within, its point or None when only α = 0 is, every midpoint's
    numbers). Invariant: α = lo is within (0: the base), α = hi is outside (1: the last point)."""
    lo, hi, best, trace = 0.0, 1.0, None, []
    for _ in range(rounds):
        mid = (lo + hi) / 2
        point = measure(mid)
        ok = within(point)
        trace.append({"alpha": mid, "forgetting": point.get("forgetting"), "learning": point.get("learning"),
                      "within": ok})
        if ok:
            lo, best = mid, point
        else:
            hi = mid
    return lo, best, trace


def wise_rollback(tracker: BudgetTracker, model, base_state: dict, evaluate: Callable[[], dict[str, Any]],
                  keep: Callable[[dict[str, Any]], Path], step: int) -> dict[str, Any]:
    """The WiSE interpolation of the base and the last weights that meets the budget (see the
    module docstring), through train.remedies' WiSE code; `keep(row)` writes the weights loaded
    at that moment. The model holds the last weights again afterwards."""
    from forgetless.train import remedies

    def measure(alpha: float) -> dict[str, Any]:
        (_, point), = remedies.wise_points(model, base_state, [alpha], evaluate)
        return {**point, "step": step}

    alpha, point, trace = bisect_alpha(measure, lambda p: not tracker.row(p)["outside"])
    out: dict[str, Any] = {"alpha": alpha, "trace": trace, "rounds": len(trace)}
    if point is None:
        return out
    row = {**tracker.row(point), "alpha": alpha}
    paths = []
    remedies.wise_points(model, base_state, [alpha], lambda: paths.append(keep(row)) or {})
    return {**out, **row, "checkpoint": str(paths[0]) if paths else None}


@dataclass
class BudgetResult(RunResult):
    """A finetune's result under a forgetting budget: `final_checkpoint` is the kept one, and
    `budget` says which (step, learning, forgetting, change per source), why the run stopped, and
    any WiSE rollback."""

    budget: dict[str, Any] = field(default_factory=dict)


def summary(tracker: BudgetTracker, kept_path: Path | None, wise: dict[str, Any] | None) -> dict[str, Any]:
    """The record of budget.json, status.json and the result."""
    return {"budget": tracker.budget, "patience": tracker.patience, "allowances": tracker.allowances(),
            "stopped": tracker.stopped, "kept": tracker.kept, "last": tracker.last, "wise": wise,
            "checkpoint": str(kept_path) if kept_path is not None else None}


def lines(record: dict[str, Any], tracker: BudgetTracker) -> list[str]:
    """What the console says at the end of a finetune under a budget."""
    out = [f"forgetting budget: {describe(record['budget'])}, on the total and each source; "
           f"patience {record['patience']}"]
    if record["stopped"]:
        out.append(f"stopped early: {record['stopped']}")
    kept, wise = record["kept"], record["wise"]
    if kept is not None:
        out.append(f"kept: step {kept['step']} (learning {kept['learning']:.4f}, forgetting {kept['forgetting']:.4f}, "
                   f"Δ {kept['forgetting_delta']:+.4f} from base) in {record['checkpoint']}")
    elif wise is not None and wise.get("checkpoint"):
        out.append(f"no evaluation was within the budget; WiSE rollback: α {wise['alpha']:g} of the step-"
                   f"{wise['step']} weights (learning {wise['learning']:.4f}, forgetting {wise['forgetting']:.4f}, "
                   f"Δ {wise['forgetting_delta']:+.4f} from base), {wise['rounds']} bisection evaluations, in "
                   f"{record['checkpoint']}")
    else:
        out.append("no evaluation was within the budget, nor any WiSE interpolation above α = "
                   f"{1 / 2 ** WISE_ROUNDS:g}: nothing kept; lower the learning rate or raise the budget")
    return out + tracker.table(wise if kept is None and wise and wise.get("checkpoint") else None)


def hook(tracker: BudgetTracker, run_path: Path, write_model: Callable[[Path], None], main: bool = True,
         barrier: Callable[[], None] = lambda: None) -> Callable[[dict[str, Any]], str | None]:
    """The training loop's `after_eval`: observe the point, write the weights when it is the new
    best within the budget (rank 0; the others wait), return why to stop or None."""
    from forgetless.models import quiet

    def after_eval(point: dict[str, Any]) -> str | None:
        decision = tracker.observe(point)
        if decision.keep:
            if main:
                with quiet():
                    keep_checkpoint(run_path, point["step"], write_model, tracker.kept)
            barrier()
        return decision.stop

    return after_eval


def finish(tracker: BudgetTracker, result: RunResult, run, model, base_state: Callable[[], dict],
           evaluate: Callable[[], dict[str, Any]], write_model: Callable[[Path], None], main: bool = True,
           barrier: Callable[[], None] = lambda: None, console: bool = True) -> BudgetResult:
    """After the run: the WiSE rollback when nothing was kept, then budget.json, status.json
    (final_checkpoint: the kept weights; last_checkpoint: the trajectory's) and the console."""
    from forgetless.models import quiet

    kept_path = Path(run.path) / KEPT if tracker.kept is not None else None
    wise = None
    if tracker.kept is None and tracker.last is not None:
        def keep(row: dict[str, Any]) -> Path:
            if main:
                with quiet():
                    keep_checkpoint(run.path, row["step"], write_model, row)
            barrier()
            return Path(run.path) / KEPT

        wise = wise_rollback(tracker, model, base_state(), evaluate, keep, tracker.last["step"])
        kept_path = Path(wise["checkpoint"]) if wise.get("checkpoint") else None
    record = summary(tracker, kept_path, wise)
    if main:
        (Path(run.path) / "budget.json").write_text(json.dumps(record, indent=2) + "\n")
        status = run.read_status()
        status.pop("updated", None)
        name = status.pop("status", result.status)
        status["last_checkpoint"] = str(result.final_checkpoint) if result.final_checkpoint else None
        if kept_path is not None:
            status["final_checkpoint"] = str(kept_path)
        run.write_status(name, **{**status, "budget": record})
        if console:
            say(lines(record, tracker))
    return BudgetResult(result.out_dir, result.status, result.points, kept_path or result.final_checkpoint,
                        budget=record)


def say(text_lines: list[str]) -> None:
    for line in text_lines:
        print(line, file=sys.stderr, flush=True)
