"""Every measurement of a run declared once: its name, unit, direction, figure label and how an
evaluation computes it.

An evaluation (forgetless.train.evaluate, called by the training loop) returns a point: a dict
whose keys are the names below. The store keeps the three oldest in their own columns of `points`
(schema version 1) and every other one in the point's `extra_json`; `EvalPoint.value(name)` reads
either, so the frontier, `compare`, the verdicts and the report ask for a metric by its name and
never by where it is kept. A new measurement is one declaration here plus the code that computes
it: the store records it, and `forgetless frontier --x NAME` and `forgetless compare --x NAME`
draw it.

A leaf module (imports nothing of forgetless but its errors), at the bottom of the layering, so
the training box and the report read the same declarations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from forgetless.errors import UserError, nearest

LOWER, HIGHER = "lower", "higher"  # which way is better
# What a metric says about the trade-off: how much the model lost of what it knew (an x axis of
# the frontier), how much it learned (a y axis), the uncertainty of another metric, or a cost.
FORGETTING, LEARNING, ERROR, COST = "forgetting", "learning", "error", "cost"


@dataclass(frozen=True)
class Metric:
    """One measurement. `name` is its key in an eval point, metrics.jsonl, the store and the
    report's rows; `column` whether the store keeps it in its own column (the rest go to
    extra_json); `label` the figure axis ({reference}: the text it was measured on)."""

    name: str
    unit: str
    better: str  # LOWER | HIGHER
    role: str  # FORGETTING | LEARNING | ERROR | COST
    label: str
    how: str  # how the evaluation computes it (one sentence, for docs and --help)
    column: bool = False
    word: str = ""  # the metric in a sentence ("at matched {word}"); default: its name
    second_view: bool = False  # a forgetting metric the report shows claim 2 on, beside the deciding one

    @property
    def phrase(self) -> str:
        return self.word or self.name.replace("_", " ")

    @property
    def maximize(self) -> bool:
        return self.better == HIGHER

    def axis_label(self, reference: str | None = None) -> str:
        """The figure's axis label, with its direction."""
        return self.label.format(reference=reference or "held-out pretraining text") + f" ({self.better} is better)"


_DECLARED = (
    Metric("forgetting", "nats", LOWER, FORGETTING, "forgetting: loss on {reference}",
           "mean token loss −log p(x_t+1 | x_≤t) over a fixed held-out sample of the pretraining text "
           "(the reference), the same windows in every run", column=True, word="forgetting"),
    Metric("kl_to_base", "nats", LOWER, FORGETTING, "forgetting: KL(base ‖ model) on {reference}",
           "mean per-token KL divergence of the finetuned model's next-token distribution from the "
           "base's on the reference sample, in the forward that measures `forgetting`; the base's "
           "distribution is kept from the step-0 evaluation as its KL_TOP_K most likely tokens and "
           "one bucket for the rest (exact when the vocabulary is no larger)", word="KL(base ‖ model)",
           second_view=True),
    Metric("learning", "nats", LOWER, LEARNING, "learning: task loss",
           "mean token loss over the response tokens of the task's held-out records", column=True, word="task loss"),
    Metric("accuracy", "share", HIGHER, LEARNING, "learning: task accuracy",
           "exact-match share of greedy answers to the task's held-out records", column=True,
           word="task accuracy"),
    Metric("forgetting_se", "nats", LOWER, ERROR, "standard error of forgetting",
           "standard error over the reference's windows of `forgetting` (a ratio estimator)"),
    Metric("forgetting_delta", "nats", LOWER, FORGETTING, "forgetting: change from the base on {reference}",
           "`forgetting` minus the same run's step-0 value (comparable across references)",
           word="forgetting change"),
    Metric("forgetting_delta_se", "nats", LOWER, ERROR, "paired standard error of the change",
           "standard error of `forgetting_delta` over the windows, paired with the base's"),
    Metric("replay_tokens", "tokens", LOWER, COST, "replay tokens",
           "pretraining tokens mixed into the finetune so far (remedy replay)"),
    Metric("wise_evaluations", "evaluations", LOWER, COST, "WiSE evaluations",
           "evaluations of interpolated weights a WiSE-FT run adds"),
    Metric("l2sp_sq_distance", "squared norm", LOWER, COST, "L2-SP squared distance",
           "squared distance of the trainable weights from the base's (remedy l2sp)"),
)
METRICS: dict[str, Metric] = {m.name: m for m in _DECLARED}

# Training writes the forgetting of each held-out source under this key; the store keeps it in
# the `sources_json` column and gives it back as `sources`.
SOURCES_KEY, SOURCES_STORED = "forgetting_by_source", "sources"

# Budgets of the Δ-view: the best learning reached with a forgetting metric at most Δ above the
# base's own value (nats, for every forgetting metric declared in nats). One tuple for the
# frontier tables, `compare` and the verdicts' Δ lines.
DELTAS = (0.1, 0.25, 0.5, 1.0)

X_DEFAULT, Y_DEFAULT = "forgetting", "learning"  # the frontier's axes unless told


def metric(name: str, role: str | None = None) -> Metric:
    """The declaration of `name`; a UserError naming the allowed names (of `role`, when given)."""
    m = METRICS.get(name)
    if m is not None and (role is None or m.role == role):
        return m
    allowed = [m.name for m in _DECLARED if role is None or m.role == role]
    if name not in allowed:
        hint = nearest(name, allowed)
        raise UserError(f"metric {name!r} is not a {role + ' ' if role else ''}metric; allowed: "
                        f"{', '.join(allowed)}" + (f" (did you mean {hint!r}?)" if hint else ""))
    return METRICS[name]


def names(role: str) -> list[str]:
    """The declared metrics of one role, in declaration order."""
    return [m.name for m in _DECLARED if m.role == role]


def second_views() -> list[str]:
    """The forgetting metrics the report shows claim 2 on beside `forgetting`, which decides it."""
    return [m.name for m in _DECLARED if m.second_view]


def columns() -> tuple[str, ...]:
    """The metrics the store keeps in their own columns of `points`, in column order."""
    return tuple(m.name for m in _DECLARED if m.column)


def value(point: Any, name: str) -> float:
    """The metric `name` of an eval point, wherever it is kept: an attribute or key of its own
    (a store column, a report row's field), else its `extra` measurements. NaN when it was not
    measured; a missing accuracy stays None, as its column says."""
    m = METRICS.get(name) or metric(name)
    if isinstance(point, dict):  # a dict row (a concrete check: this runs for every point of a verdict)
        v = point.get(name)
        if v is None and not m.column:
            v = (point.get("extra") or {}).get(name)
    else:  # a typed point or row
        v = getattr(point, name, None)
        if v is None and not m.column:
            v = (getattr(point, "extra", None) or {}).get(name)
    if v is None:
        return None if name == "accuracy" else math.nan
    return float(v)


def measured(point: Any, name: str) -> bool:
    """Whether the metric is a finite number at this point."""
    v = value(point, name)
    return v is not None and math.isfinite(v)


def recorded(point: Any, name: str) -> bool:
    """Whether the evaluation recorded the metric at this point: a column metric always (NaN
    there is a diverged checkpoint, which stays a point), an accuracy when measured, any other
    metric when it is a number (a store written before it existed has none)."""
    v = value(point, name)
    return v is not None and (metric(name).column or not math.isnan(v))
