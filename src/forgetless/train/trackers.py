"""Optional experiment trackers: TensorBoard, Weights & Biases, MLflow — all local by default.

None is required; each is opened only when the user names it, and a missing package is a clear
error before training starts, not a traceback in the middle of it. Every tracker gets the same
keys as metrics.jsonl ("train/loss", "eval/forgetting", ...) at the same optimizer steps.

Where each one writes, unless the user's own environment variables say otherwise:
    tensorboard  <run>/tensorboard/ (event files)
    wandb        <run>/wandb/offline-run-*  (offline: nothing leaves the machine unless
                 WANDB_MODE=online is set; `wandb sync <that dir>` uploads it later)
    mlflow       sqlite:///<run>/mlflow.db, experiment "forgetless" (MLFLOW_TRACKING_URI and
                 MLFLOW_EXPERIMENT_NAME replace them, e.g. one server or database for a sweep)
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


def _ending(before: BaseException | None) -> str:
    """How the run ended, for close(): the loop closes trackers in a `finally`, so an exception in
    flight there means the run failed (KeyboardInterrupt: it was stopped). `before` is the one in
    flight when the tracker opened (a sweep retrying inside an `except`): not this run's."""
    error = sys.exc_info()[1]
    if error is None or error is before:
        return "finished"
    return "killed" if isinstance(error, KeyboardInterrupt) else "failed"


def check_trackers(names: list[str]) -> None:
    """Raise ValueError naming the tracker and the package to install when one is missing."""
    for name in names:
        if name not in _PACKAGES:
            raise ValueError(f"tracker {name!r} is unknown; allowed: {', '.join(_PACKAGES)}")
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            package = _PACKAGES[name]
            raise ValueError(f"tracker {name!r} needs the {package} package: pip install {package} "
                             "(or pip install 'forgetless[tracking]')")
    if "mlflow" not in names or os.environ.get("MLFLOW_TRACKING_URI"):
        return
    # mlflow-skinny has no database layer; the default store (a SQLite file) needs one.
    missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"tracker 'mlflow' keeps its runs in <run>/mlflow.db, which needs "
                         f"{' and '.join(missing)}: pip install {' '.join(missing)} (the full "
                         "mlflow package has them), or set MLFLOW_TRACKING_URI to a server")


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()  # flushes the queue to the event file


class _Wandb:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        self.before = sys.exc_info()[1]
        # Offline unless the user's WANDB_MODE says otherwise (mode=None lets wandb read it).
        # reinit="create_new": a run the user already has open is neither finished nor reused.
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "forgetless",
                              name=run_dir.name, dir=str(run_dir), config=config,
                              reinit="create_new",
                              mode=None if os.environ.get("WANDB_MODE") else "offline")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish(exit_code=0 if _ending(self.before) == "finished" else 1)


class _MLflow:
    """A client of its own (no mlflow.start_run): the user's active run and URI stay untouched."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.before = sys.exc_info()[1]
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None if uri else (run_dir / "mlflow-artifacts").resolve().as_uri()
        default = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri or default)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "forgetless"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # another run created it in the meantime
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        params = [Param(k, str(v)[:500]) for k, v in config.items()]
        self.client.log_batch(self.run_id, params=params)

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        status = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
        self.client.set_terminated(self.run_id, status[_ending(self.before)])


_KINDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "mlflow": _MLflow}


def open_trackers(names: list[str], run_dir: Path, config: dict[str, Any]) -> list[Tracker]:
    """The named trackers, opened (each once); if one fails to open, those opened are closed."""
    check_trackers(names)
    opened: list[Tracker] = []
    try:
        for name in dict.fromkeys(names):
            opened.append(_KINDS[name](run_dir, config))
    except BaseException:
        for tracker in opened:
            tracker.close()
        raise
    return opened
