"""Stopping dominated finetunes early (`forgetless sweep STUDY --prune`).

A finetune is stopped when, after a warm-up of `warmup` evaluations past its start, every point it
has measured is dominated by more than `margin` (in both losses) by the frontier of the finished
runs of the same base, task and method (the other learning rates of that grid line). Such a run has
so far learned less *and* forgotten more than a run already in the store at some point of its path;
continuing it would mostly buy points that no frontier uses.

Why this never decides a verdict by itself:
- the margin is the verdicts' own resolution (report.verdicts.FRONTIER_MARGIN, 0.02 nats; sweep is
  below report, so the number lives here and a test keeps the two equal): a run is only stopped
  where the verdicts could tell it is worse;
- a stopped run's points are real measurements of a shorter run and stay in the store as they are
  (the run is `done`, its meta says `pruned` and why; its status.json says "pruned"); frontiers and verdicts read them like any
  other points, and a dominated point is on no envelope;
- the step-0 point (the untouched base, shared by every finetune of that base and task) is not
  judged: it is never dominated, and it is not the run's own doing.
What pruning can change is a frontier the finished runs do not cover yet, e.g. a run dominated
early whose later points would have reached forgetting no other run reaches; the warm-up is the
guard against that, and tests/sweep/test_prune.py checks the verdicts on a store with a known answer.
Measured on cpu-full (benchmarks/prune.py --grid, docs/BENCHMARKS.md): that case is the common one
there (the highest learning rate's early points lie under the lower rates' later ones, its later
points make the frontier's far end), so a margin of 0 or judging only the latest points (`window`)
stop runs but change verdicts; the default stops none there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forgetless.sweep.records import Cell, EvalPoint
from forgetless.sweep.store import Store
from forgetless.train.stop import StopRun

PRUNE_MARGIN = 0.02  # nats; equal to report.verdicts.FRONTIER_MARGIN (tests/sweep/test_prune.py)
PRUNE_WARMUP = 2  # evaluations after step 0 before a run may be stopped


class RunPruned(StopRun):
    """Raised from a finetune's on_eval when its points are all dominated. The training loop ends
    the run there, not as an error: it checkpoints the step, status.json says "pruned" and why
    (`stopped`), and the cell is recorded done with its points, marked pruned (sweep.cell)."""

    status = "pruned"


@dataclass(frozen=True)
class PruneRule:
    """When to stop a finetune: after `warmup` evaluations past step 0, if every one of them is
    dominated by more than `margin` nats in both forgetting and learning. `window` (None: all)
    judges only the run's latest `window` points instead (benchmarks/prune.py measures both)."""

    warmup: int = PRUNE_WARMUP
    margin: float = PRUNE_MARGIN
    window: int | None = None

    def __post_init__(self) -> None:
        from forgetless.errors import UserError

        if self.warmup < 1:
            raise UserError(f"--prune-warmup must be at least 1 evaluation; got {self.warmup}")
        if not self.margin >= 0:
            raise UserError(f"the prune margin must be >= 0 nats; got {self.margin}")
        if self.window is not None and self.window < 1:
            raise UserError(f"the prune window must be at least 1 evaluation (or None: all); got {self.window}")

    def stops(self, own: list[Pair], front: list[Pair]) -> bool:
        """Whether a run whose points past step 0 are `own` (by step) stops against `front`."""
        if len(own) < self.warmup or not front:
            return False
        judged = own if self.window is None else own[-self.window:]
        return all(dominated(p, front, self.margin) for p in judged)


Pair = tuple[float, float]  # (forgetting, learning): lower is better in both


def pareto(points: list[Pair]) -> list[Pair]:
    """The non-dominated points, by increasing forgetting (so decreasing learning)."""
    front: list[Pair] = []
    for forget, learn in sorted(points):
        if not front or learn < front[-1][1]:
            front.append((forget, learn))
    return front


def dominated(point: Pair, front: list[Pair], margin: float) -> bool:
    """Whether some frontier point forgets and learns better than `point` by more than `margin`."""
    forget, learn = point
    return any(pf + margin < forget and pl + margin < learn for pf, pl in front)


def _pair(p: EvalPoint) -> Pair | None:
    if p.wise or not (math.isfinite(p.forgetting) and math.isfinite(p.learning)):
        return None
    return p.forgetting, p.learning


def peers(store: Store, cell: Cell) -> list[str]:
    """Finished runs of the same base, task and method as `cell` (other learning rates, seeds)."""
    task = cell.meta.get("task")
    return [r["cell_id"] for r in store.runs()
            if r["cell_id"] != cell.cell_id and r["kind"] == "finetune" and r["status"] == "done"
            and r["base_id"] == cell.base_id and r["method"] == cell.method
            and (r.get("meta") or {}).get("task") == task]


def peer_front(store: Store, cell: Cell) -> list[Pair]:
    """The frontier of the points of `peers` (their pruned points included: they are real)."""
    pairs = [pair for cid in peers(store, cell) for p in store.eval_points(run_id=cid)
             if (pair := _pair(p)) is not None]
    return pareto(pairs)


class Pruner:
    """`pruner(point)`, called on each eval point of one finetune: a reason when it should stop,
    else None. Reads the store at each decision, so runs finished meanwhile (other workers) count."""

    def __init__(self, store: Store, cell: Cell, rule: PruneRule):
        self.store, self.cell, self.rule = store, cell, rule
        self.own: dict[int, Pair] = {}  # step -> point (a resumed run re-reports steps)
        for p in store.eval_points(run_id=cell.cell_id):  # an interrupted attempt's points count
            if p.step > 0 and (pair := _pair(p)) is not None:
                self.own[p.step] = pair

    def __call__(self, point: dict) -> str | None:
        if point.get("wise") is not None or point.get("learning") is None or int(point["step"]) <= 0:
            return None
        pair = (float(point["forgetting"]), float(point["learning"]))
        if not all(math.isfinite(x) for x in pair):
            return None  # the divergence check's business
        self.own[int(point["step"])] = pair
        if len(self.own) < self.rule.warmup:
            return None
        if not self.rule.stops([self.own[s] for s in sorted(self.own)], peer_front(self.store, self.cell)):
            return None
        which = f"{len(self.own)} points are all" if self.rule.window is None or self.rule.window >= len(self.own) \
            else f"last {self.rule.window} of {len(self.own)} points are"
        return (f"pruned at step {point['step']}: its {which} dominated by more than "
                f"{self.rule.margin:g} nats by the frontier of {len(peers(self.store, self.cell))} finished "
                f"run(s) of the same base, task and method")
