"""The records that pass between the study, the runner, its backends, the store and the report.

    Cell       one training run of a study, as `study.expand` resolves it (what the runner claims
               and a backend runs; the store keeps it as a row of `runs`)
    Run        a row of `runs` as the store gives it back: the cell's labels, config and state
    EvalPoint  one evaluation of a run, as the store gives it back (a row of `points` with its
               run's labels); the report's tables are built from these
    Outcome    what a finished cell reports to the store

A leaf module (it imports only the metric registry, forgetless.metrics), so every box that passes
these records can import it.
The store's tables keep their columns (schema version 1): these records are how the code reads
and writes them, not a new format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from forgetless import metrics

Kind = Literal["pretrain", "finetune"]


@dataclass(frozen=True)
class Cell:
    """One run of a study. `config` is what the id hashes (study.cell_id); `meta` holds labels
    for tables and plots (base, base_optimizer, base_seed, task, method, seed), not hashed."""

    cell_id: str
    kind: Kind
    base_id: str | None  # the pretraining cell this finetune starts from; None: none, or an outside checkpoint
    label: str  # e.g. "adamw/s1/arith/full-muon/lr=0.001"
    method: str | None  # the method's label (finetunes)
    lr: float | None
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_finetune(self) -> bool:
        return self.kind == "finetune"


@dataclass(frozen=True)
class Run:
    """One run of the store (a row of `runs`) with its config and labels decoded, as the readers
    take it beside its `EvalPoint`s. `meta`: base, base_optimizer, base_seed, task, method, seed,
    and for budgeted bases budget / base_tokens; pruned (why --prune stopped a done run)."""

    cell_id: str
    kind: Kind
    label: str
    status: str  # pending | running | done | diverged | failed
    base_id: str | None = None
    method: str | None = None
    lr: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    out_dir: str | None = None
    checkpoint: str | None = None
    attempts: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Run:
        """From a row of `Store.runs()`."""
        return cls(cell_id=row["cell_id"], kind=row["kind"], label=row["label"], status=row["status"],
                   base_id=row.get("base_id"), method=row.get("method"), lr=row.get("lr"),
                   config=row.get("config") or {}, meta=row.get("meta") or {}, error=row.get("error"),
                   out_dir=row.get("out_dir"), checkpoint=row.get("checkpoint"), attempts=row.get("attempts") or 0)


@dataclass(frozen=True)
class EvalPoint:
    """One eval point of a run: the losses (NaN when not measured), the task accuracy (None when
    the task has none) and forgetting per held-out source, with its run's labels."""

    run_id: str
    step: int
    tokens: int | None
    forgetting: float  # loss on held-out pretraining data
    learning: float  # loss on the task's held-out records (NaN for pretraining)
    accuracy: float | None = None
    wall_time: float | None = None
    sources: dict[str, float] | None = None  # forgetting per held-out source
    extra: dict[str, Any] | None = None  # anything else the training box measured
    kind: Kind = "finetune"  # of its run
    label: str = ""
    method: str | None = None
    lr: float | None = None
    base_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EvalPoint:
        """From a row of `Store.points()` (a dict with these keys and a few more)."""
        nan = float("nan")
        return cls(run_id=row["run_id"], step=int(row["step"]), tokens=row.get("tokens"),
                   forgetting=_float(row.get("forgetting"), nan), learning=_float(row.get("learning"), nan),
                   accuracy=row.get("accuracy"), wall_time=row.get("wall_time"), sources=row.get("sources"),
                   extra=row.get("extra"), kind=row.get("kind", "finetune"), label=row.get("label", ""),
                   method=row.get("method"), lr=row.get("lr"), base_id=row.get("base_id"),
                   meta=row.get("meta") or {})

    def value(self, name: str) -> float:
        """The metric `name` (forgetless.metrics) at this point, wherever the store keeps it: its
        own column, or the point's extra measurements. NaN when it was not measured (None only
        for a missing accuracy, as the column says)."""
        return metrics.value(self, name)

    def has(self, name: str) -> bool:
        """Whether the metric was measured at this point (a finite number)."""
        return metrics.measured(self, name)

    @property
    def loss(self) -> float:
        """The loss its run optimises: the task loss of a finetune, the held-out loss otherwise."""
        return self.learning if self.kind == "finetune" else self.forgetting

    @property
    def wise(self) -> bool:
        """A WiSE-FT point (weights interpolated after the run), not a point of the trajectory."""
        return (self.extra or {}).get("wise") is not None


def _float(value: Any, missing: float) -> float:
    return missing if value is None else float(value)


@dataclass
class Outcome:
    """What a finished cell reports to the store."""

    status: str  # "done" | "diverged" | "failed"
    error: str | None = None
    checkpoint: str | None = None
    points: list[dict] = field(default_factory=list)  # the run's complete record of eval points
    pruned: str | None = None  # why the sweep stopped it (sweep.prune): a done run's meta says so
