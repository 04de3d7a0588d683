"""Optional experiment trackers: TensorBoard, Weights & Biases (offline mode works), MLflow.

None is required; each is opened only when the user names it, and a missing package is a clear
error before training starts, not a traceback in the middle of it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


def check_trackers(names: list[str]) -> None:
    """Raise ValueError naming the tracker and the package to install when one is missing."""
    for name in names:
        if name not in _PACKAGES:
            raise ValueError(f"tracker {name!r} is unknown; allowed: {', '.join(_PACKAGES)}")
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ValueError(f"tracker {name!r} needs the {_PACKAGES[name]} package: "
                             f"pip install {_PACKAGES[name]} (or pip install 'forgetless[tracking]')")


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb  # WANDB_MODE=offline keeps everything local

        self.run = wandb.init(project="forgetless", name=run_dir.name, dir=str(run_dir), config=config,
                              reinit=True)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=run_dir.name)
        mlflow.log_params({k: str(v)[:250] for k, v in config.items()})

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def open_trackers(names: list[str], run_dir: Path, config: dict[str, Any]) -> list[Tracker]:
    check_trackers(names)
    kinds = {"tensorboard": _TensorBoard, "wandb": _Wandb, "mlflow": _MLflow}
    return [kinds[name](run_dir, config) for name in names]
