"""Optional experiment trackers: TensorBoard, Weights & Biases, MLflow — all local by default.

They are `accelerate.tracking` trackers (accelerate is a dependency already): each has
`start()`, `store_init_configuration(config)`, `log(values, step)` and `finish()`. None is
required; each is opened only when the user names it, and a missing package is a clear error before
training starts, not a traceback in the middle of it. Every tracker gets the keys of
metrics.jsonl ("train/loss", "eval/learning", ...) at the same optimizer steps; forgetting under
the tags ForgettingCallback's records take in a Trainer ("eval/forgetting_loss",
"eval/forgetting_delta", "eval/forgetting_loss_<source>"), so both kinds of run share a chart.

Where each one writes, unless the user's own environment variables say otherwise:
    tensorboard  <run>/tensorboard/ (event files; the config as hparams and hparams.yml)
    wandb        <run>/wandb/offline-run-*  (offline: nothing leaves the machine unless
                 WANDB_MODE=online is set; `wandb sync <that dir>` uploads it later)
    mlflow       sqlite:///<run>/mlflow.db, experiment "forgetless" (MLFLOW_TRACKING_URI and
                 MLFLOW_EXPERIMENT_NAME replace them, e.g. one server or database for a sweep)

What accelerate lacks, and the thin adapters below add:
- accelerate's trackers pick the main process through PartialState (an Accelerator's state), and
  their debug logging raises unless one exists. forgetless has no Accelerator: open_trackers
  creates the PartialState (it reuses the process group the loop has set up under torchrun), and
  `main_process_only` is off because the loop opens trackers on rank 0 only.
- WandBTracker.finish() and MLflowTracker.finish() always mark the run finished; a run that fails
  or is stopped is marked so here (W&B exit code 1; MLflow FAILED / KILLED).
- MLflowTracker works through mlflow's global state (mlflow.start_run, the global tracking URI,
  one active run: it raises when the user has a run open, and cannot default to a store inside the
  run directory without changing the user's URI). _MLflow is a GeneralTracker with a client of its
  own instead, so the user's active run and URI stay untouched.
- accelerate.tracking.filter_trackers drops a tracker whose package is missing with a debug log;
  check_trackers makes that an error naming the package, before training.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}

# Tracker tags of the forgetting numbers: the names ForgettingCallback's records take in a
# Trainer's trackers (eval_forgetting_loss -> eval/forgetting_loss), so a TensorBoard holding runs
# of both kinds draws them on one chart (metrics.jsonl keeps its own keys).
TAGS = {"forgetting": "forgetting_loss", "forgetting_by_source": "forgetting_loss_"}


def tags(point: dict[str, Any], prefix: str) -> dict[str, float]:
    """The numeric entries of an eval point as tracker tags, nested ones (forgetting per source)
    as prefix/key/sub, or prefix/forgetting_loss_<source> as the callback writes them."""
    out: dict[str, float] = {}
    for key, value in point.items():
        if isinstance(value, dict) and key in TAGS:
            out.update({f"{prefix}/{TAGS[key]}{k}": v for k, v in value.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        elif isinstance(value, dict):
            out.update(tags(value, f"{prefix}/{key}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{TAGS.get(key, key)}"] = value
    return out



def _ending(before: BaseException | None) -> str:
    """How the run ended, for finish(): the loop finishes trackers in a `finally`, so an exception
    in flight there means the run failed (KeyboardInterrupt: it was stopped). `before` is the one
    in flight when the tracker opened (a sweep retrying inside an `except`): not this run's."""
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


def _scalars(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard hparams accept it: numbers, strings and bools (lists as text)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in config.items() if v is not None}


class _TensorBoard(TensorBoardTracker):
    main_process_only = False  # the loop opens trackers on rank 0 only

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        super().__init__("tensorboard", run_dir)  # accelerate writes to logging_dir/run_name
        self.start()
        self.store_init_configuration(_scalars(config))


class _Wandb(WandBTracker):
    main_process_only = False

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.before = sys.exc_info()[1]
        # accelerate passes run_name as wandb.init's project; the rest goes to wandb.init as is.
        # Offline unless the user's WANDB_MODE says otherwise (mode=None lets wandb read it).
        # reinit="create_new": a run the user already has open is neither finished nor reused,
        # which is also why the config goes to init and not to store_init_configuration (that
        # updates the global wandb.config, i.e. the user's run).
        super().__init__(os.environ.get("WANDB_PROJECT") or "forgetless", name=run_dir.name,
                         dir=str(run_dir), config=config, reinit="create_new",
                         mode=None if os.environ.get("WANDB_MODE") else "offline")
        self.start()

    def finish(self) -> None:
        self.run.finish(exit_code=0 if _ending(self.before) == "finished" else 1)


class _MLflow(GeneralTracker):
    """A client of its own (no mlflow.start_run): the user's active run and URI stay untouched."""

    name, requires_logging_directory, main_process_only = "mlflow", False, False

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        super().__init__()
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

    @property
    def tracker(self):
        return self.client

    def log(self, values: dict[str, float], step: int | None = None, **kwargs) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step or 0) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self) -> None:
        status = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
        self.client.set_terminated(self.run_id, status[_ending(self.before)])


_KINDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "mlflow": _MLflow}


def open_trackers(names: list[str], run_dir: Path, config: dict[str, Any]) -> list[GeneralTracker]:
    """The named trackers, started (each once); if one fails to start, those started are finished."""
    check_trackers(names)
    if names:
        PartialState()  # accelerate's tracker logging needs it (no Accelerator here)
    opened: list[GeneralTracker] = []
    try:
        for name in dict.fromkeys(names):
            opened.append(_KINDS[name](run_dir, config))
    except BaseException:
        for tracker in opened:
            tracker.finish()
        raise
    return opened
