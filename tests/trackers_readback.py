"""Read back what a Trainer's report_to trackers wrote, each with its own reader: TensorBoard's
EventAccumulator, the W&B offline run file (its protobuf records), MLflow's client. Also the
environment that keeps all three local (inside tmp_path, nothing on the network)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def local_trackers(monkeypatch, tmp_path: Path) -> None:
    """TensorBoard, W&B (offline) and MLflow (sqlite) write under tmp_path and nowhere else."""
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "WANDB_CACHE_DIR",
                "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "env" / var.lower()))
    for var in ("WANDB_API_KEY", "WANDB_ENTITY", "MLFLOW_EXPERIMENT_ID", "HF_MLFLOW_LOG_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "forgetless-test")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # no stdout hooks left behind between runs
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "forgetless-test")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")


def tensorboard(log_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in the event files under log_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def wandb_records(path: Path):
    """The protobuf Records of a .wandb file: wandb's 7-byte header (':W&B', magic, version), then
    LevelDB's log format: 32 KiB blocks of chunks, each crc32c(4) length(2, LE) type(1) payload,
    type FULL=1 or FIRST=2, MIDDLE=3, LAST=4; a block tail under 7 bytes is padding."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and data[6] == 0, data[:7]
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def wandb(wandb_dir: Path) -> dict[str, dict[int, float]]:
    """{key: {Trainer global step: value}} from the one offline run under wandb_dir/wandb."""
    import wandb as wb

    if wb.run is not None:  # HF's WandbCallback leaves its run open at the end of training
        wb.run.finish()
    wb.teardown()  # the service flushes the .wandb file only when it stops
    (run_dir,) = (wandb_dir / "wandb").glob("offline-run-*")
    (path,) = run_dir.glob("run-*.wandb")
    history: dict[str, dict[int, float]] = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:  # value_json, or a typed field in newer versions
            value = (json.loads(item.value_json) if item.value_json
                     else getattr(item, item.WhichOneof("value")))
            row[item.key or "/".join(item.nested_key)] = value
        step = int(row.get("train/global_step", -1))
        for key, value in row.items():
            history.setdefault(key, {})[step] = value
    return history


def mlflow(uri: str, experiment: str) -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            for key in run.data.metrics}


def stop_wandb() -> None:
    if "wandb" in sys.modules:
        wb = sys.modules["wandb"]
        if wb.run is not None:
            wb.run.finish()
        wb.teardown()
