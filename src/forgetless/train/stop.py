"""Ending a run early by a decision, not an error (torch-free: the sweep imports it)."""

from __future__ import annotations


class StopRun(Exception):
    """Raised from a run's `on_eval` to end it at that evaluation (sweep.prune.RunPruned): the
    training loop checkpoints the step, writes status.json `status` with `stopped` (the message,
    why) and returns a RunResult of that status with the points so far. Raised at the run's last
    evaluation it stops nothing: the run is "done"."""

    status = "stopped-early"
