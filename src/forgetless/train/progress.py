"""What a person sees while a run trains and evaluates (issue 23 §4).

On a terminal: the training bar, and a second bar with an ETA over each evaluation's forwards.
Without one (a log file, nohup): no bars, but plain lines instead, one per training log interval
and one when each evaluation starts and ends. Both go to stderr, the console's stream, so the
test is whether stderr is a terminal. Before training, one line says what an evaluation costs:
its tokens, the seconds the first one took, and the share of the run's wall time evaluations
will take at the current eval_every.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from forgetless.train import evaluate

# Backward costs about twice a forward, so a training token costs about 3 forward tokens (4 with
# activation checkpointing, which runs the forward again): the estimate before any step is timed.
TRAIN_FORWARDS = 3


class EvalWatch:
    """Counts one evaluation's forwards and tokens as `evaluate.loss_stats` reports them, and
    moves a bar with an ETA when `live`. `total`: the forwards of an earlier evaluation (the same
    batches every time); None on the first, whose total grows as each loss pass starts."""

    def __init__(self, label: str, live: bool, total: int | None = None):
        self.forwards, self.tokens, self.fixed, self.seconds = 0, 0, total is not None, 0.0
        self.rows: evaluate.LossStats | None = None  # the forgetting sample's, when measured
        self.bar = tqdm(total=total, desc=label, unit="fwd", leave=False, dynamic_ncols=True, file=sys.stderr) \
            if live else None

    def expect(self, forwards: int) -> None:
        if self.bar is not None and not self.fixed:
            self.bar.total = (self.bar.total or 0) + forwards
            self.bar.refresh()

    def forgetting(self, stats: evaluate.LossStats) -> None:
        self.rows = stats

    def done(self, tokens: int) -> None:
        self.forwards += 1
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(1)


class Console:
    """The run's progress lines and evaluation bars. `say` prints a console line (a no-op when
    the console is off); `live` a terminal with the progress bar on; `plain` no terminal, progress
    on: plain lines instead of bars."""

    def __init__(self, say: Callable[[str], None], steps: int, progress: bool, main: bool = True,
                 earlier: list[dict[str, Any]] | None = None):
        terminal = sys.stderr.isatty() or "ipykernel" in sys.modules  # a notebook draws tqdm.auto's bars
        self.say, self.steps = say, steps
        self.live, self.plain = progress and main and terminal, progress and main and not terminal
        self.forwards: int | None = None  # of the last evaluation: the next one's bar total
        self.eval_seconds, self.eval_tokens, self.evaluations = 0.0, 0, 0
        # the base's per-window losses (a resumed run reads them back from metrics.jsonl)
        saved = [r for r in earlier or [] if r.get("kind") == "windows"]
        self.base = (np.array(saved[0]["loss_sums"]), np.array(saved[0]["tokens"])) if saved else None

    @contextlib.contextmanager
    def evaluation(self, step: int) -> Iterator[EvalWatch]:
        """Watch one evaluation: a bar or a start line, then an end line with its seconds."""
        label = "evaluation" + (" (base)" if step == 0 else f" at step {step}")
        if self.plain:
            self.say(f"{label}: started")
        watch = EvalWatch(label, self.live, self.forwards)
        evaluate.WATCHERS.append(watch)
        start = time.perf_counter()
        try:
            yield watch
        finally:
            evaluate.WATCHERS.remove(watch)
            if watch.bar is not None:
                watch.bar.close()
        seconds = time.perf_counter() - start
        self.forwards, self.eval_tokens = watch.forwards, watch.tokens
        self.eval_seconds += seconds
        self.evaluations += 1
        watch.seconds = seconds
        if self.plain:
            self.say(f"{label}: done in {seconds:.1f} s ({watch.tokens:,} tokens)")

    def delta_se(self, step: int, watch: EvalWatch, run) -> dict[str, float]:
        """{"forgetting_delta_se": the paired standard error of Δ from the base} over the same
        windows; at step 0 the base's windows are kept (and saved to metrics.jsonl as a
        "windows" record, for a resumed run) and {} returned."""
        if watch.rows is None:
            return {}
        if step == 0:
            self.base = (watch.rows.row_sums, watch.rows.row_tokens)
            run.append_metrics({"kind": "windows", "step": 0, "loss_sums": self.base[0].tolist(),
                                "tokens": self.base[1].tolist()})
            return {}
        if self.base is None or self.base[1].shape != watch.rows.row_tokens.shape \
                or not np.array_equal(self.base[1], watch.rows.row_tokens):
            return {}
        se = evaluate.ratio_se(watch.rows.row_sums - self.base[0], self.base[1])
        return {"forgetting_delta_se": se} if math.isfinite(se) else {}

    def train_line(self, step: int, loss: float, lr: float, rate: float) -> None:
        """A plain line per training log interval (the bar's postfix says the same on a terminal)."""
        if self.plain:
            self.say(f"step {step}/{self.steps} loss {loss:.4f} lr {lr:.2e} {rate:,.0f} tok/s")


def cost_line(tokens: int, seconds: float, evaluations: int, eval_every: int, train_steps: int,
              train_tokens_per_step: int, checkpointing: bool) -> str:
    """The cost of one evaluation and the share of wall time the run's evaluations will take:
    training time estimated from the evaluation's own rate, TRAIN_FORWARDS (+1 with checkpointing)
    forward tokens per training token."""
    per_token = seconds / max(tokens, 1)
    train = train_steps * train_tokens_per_step * (TRAIN_FORWARDS + checkpointing) * per_token
    evals = evaluations * seconds
    share = evals / max(evals + train, 1e-9)
    return (f"evaluation cost: {tokens:,} tokens in {seconds:.1f} s; {evaluations} more at eval_every {eval_every} "
            f"≈ {evals:,.0f} s, about {share:.0%} of the run's wall time (training estimated at "
            f"{TRAIN_FORWARDS + checkpointing}x the forward cost per token; raise eval_every or lower eval_tokens "
            f"to spend less)")


def share_line(eval_seconds: float, evaluations: int, wall: float) -> str:
    """The measured share at the end of the run."""
    return f"evaluations: {evaluations} took {eval_seconds:,.1f} s of {wall:,.1f} s wall time " \
           f"({eval_seconds / max(wall, 1e-9):.0%})"


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def eval_line(point: dict[str, Any], steps: int) -> str:
    """One console line per eval point: step, forgetting ± its standard error over the sample's
    windows (Δ from the base), learning, accuracy."""
    label = "step 0 (base)" if point["step"] == 0 else f"step {point['step']}/{steps}"
    parts = [f"forgetting {_fmt(point.get('forgetting'))}"]
    if isinstance(point.get("forgetting_se"), float) and math.isfinite(point["forgetting_se"]):
        parts[0] += f" ± {point['forgetting_se']:.4f}"
    if point.get("forgetting_delta") is not None:
        se = point.get("forgetting_delta_se")
        parts[0] += f" (Δ {point['forgetting_delta']:+.4f}" + (f" ± {se:.4f}" if se is not None else "") + " from base)"
    parts += [f"learning {_fmt(point.get('learning'))}", f"accuracy {_fmt(point.get('accuracy'), '.3f')}"]
    return f"{label}: " + ", ".join(parts)
