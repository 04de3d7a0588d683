"""One cell, on whichever worker runs it: the divergence check, and the outcome it reports.

Shared by the local worker pool (`runner.run_cell` writes the store itself) and the Ray backend
(the task sends points and the outcome back to the driver), so neither imports the other.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path

from forgetless.sweep.execute import train_executor
from forgetless.sweep.prune import RunPruned
from forgetless.sweep.records import Cell, Outcome
from forgetless.sweep.store import Store
from forgetless.sweep.study import Study

__all__ = ["Cell", "EvalLossDiverged", "Outcome", "execute_cell", "failed", "first_loss", "is_wise",
           "record_outcome"]


class EvalLossDiverged(Exception):
    """Raised from on_eval when the optimised *eval* loss passes `eval_diverge_factor` x its first
    value (the study's check; the training box watches the train loss with its `diverge_factor`)."""


def _loss_of(cell: Cell, point: dict) -> float | None:
    """The loss a run optimises, from a point as training reports it: task loss for a finetune,
    held-out pretraining loss otherwise."""
    value = point.get("learning") if cell.is_finetune else point.get("forgetting")
    return None if value is None else float(value)


def first_loss(store: Store, cell: Cell) -> float | None:
    """The loss of the cell's first point in the store (an interrupted attempt's start stays the
    start of the divergence check when the cell resumes)."""
    earlier = [p for p in store.eval_points(run_id=cell.cell_id) if not p.wise]
    return earlier[0].loss if earlier else None


def is_wise(point: dict) -> bool:
    """A WiSE-FT point (weights interpolated after the run, forgetless.train.remedies), not a
    point of the trajectory: its `wise` key (in `extra` when read back from the store)."""
    return point.get("wise") is not None or (point.get("extra") or {}).get("wise") is not None


def execute_cell(cell: Cell, cell_dir: str, base_dir: str | None, start_loss: float | None,
                 on_point: Callable[[dict], None], executor: Callable | None = None,
                 should_stop: Callable[[dict], str | None] | None = None) -> Outcome:
    """Run one cell with the divergence check; the Outcome the store should record.

    on_point gets every eval point as it is measured, before the check (so the point that crossed
    the line is kept). Never raises for a training problem. Shared by run_cell (a local worker
    writes the store itself) and the Ray backend (the task sends points back to the driver).
    should_stop (sweep.prune.Pruner) gets each kept point after the check: a reason stops the run,
    which is then `done` with its points so far, marked pruned.
    """
    factor = float(cell.config.get("eval_diverge_factor", Study.model_fields["eval_diverge_factor"].default))
    start: dict = {"loss": start_loss, "pruned": None}

    def on_eval(point: dict) -> None:
        on_point(point)
        loss = None if is_wise(point) else _loss_of(cell, point)  # WiSE points are not training
        if loss is None:
            return
        if start["loss"] is None:
            start["loss"] = loss
        elif not abs(loss) < float("inf") or loss > factor * start["loss"]:
            raise EvalLossDiverged(f"loss {loss:.4g} at step {point['step']} is above {factor:g} x its "
                           f"start {start['loss']:.4g} (eval_diverge_factor)")
        if should_stop is not None and (why := should_stop(point)):
            start["pruned"] = why
            raise RunPruned(why)  # the training loop ends the run there (status "pruned"), not an error

    if executor is None:
        executor = train_executor
    try:
        result = executor(cell, Path(cell_dir), base_dir, on_eval)
        status = "diverged" if result.status == "diverged" else "done"
        return Outcome(status, points=list(result.points or []),
                       error=_divergence_reason(Path(cell_dir)) if status == "diverged" else None,
                       checkpoint=str(result.final_checkpoint) if result.final_checkpoint else None,
                       pruned=start["pruned"] if result.status == "pruned" else None)
    except EvalLossDiverged as err:
        return Outcome("diverged", error=str(err))
    except RunPruned as err:  # an executor that lets it through: real points of a shorter run, done and marked
        return Outcome("done", pruned=str(err))
    except Exception as err:  # recorded, and the sweep goes on
        return failed(err)


def failed(err: BaseException) -> Outcome:
    """The Outcome of a cell that raised: the error and a short traceback."""
    return Outcome("failed", error=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}")


def record_outcome(store: Store, cell_id: str, outcome: Outcome) -> None:
    """Write what execute_cell returned: the run's points, then its final status."""
    if outcome.points:
        store.add_points(cell_id, outcome.points)
    store.finish(cell_id, outcome.status, error=outcome.error, checkpoint=outcome.checkpoint,
                 pruned=outcome.pruned)


def _divergence_reason(cell_dir: Path) -> str:
    """The training box's own words (status.json), else a generic line."""
    try:
        return str(json.loads((cell_dir / "status.json").read_text())["reason"])
    except (OSError, ValueError, KeyError):
        return "the training loss became NaN/inf or left its range"
