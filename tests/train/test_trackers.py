"""Trackers: what TensorBoard, W&B (offline) and MLflow hold after a run, read back with each tool's
own reader, equals the run's metrics.jsonl; a failed run still closes them (marked failed); a
missing package is a clear error before training. Nothing may reach the network or the user's
home."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.tracking import GeneralTracker

from forgetless.train import PretrainConfig, pretrain
from forgetless.train import trackers as trackers_module
from trackers_readback import tensorboard, wandb_records

SHORT = dict(steps=4, eval_every=2, log_every=2)  # train lines at 2, 4; eval points at 0, 2, 4


@pytest.fixture(autouse=True)
def _local_only(tmp_path, monkeypatch):
    """Every tracker setting points into tmp_path. WANDB_MODE is unset on purpose: the tracker must
    choose offline by itself; were it to go online, the base URL is a closed local port."""
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "WANDB_DIR",
                "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "env" / var.lower()))
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY",
                "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    yield
    if "wandb" in sys.modules:  # stop wandb's background service process
        sys.modules["wandb"].teardown()


def _jsonl(out: Path) -> tuple[dict[int, float], dict[int, float]]:
    """The reference, from metrics.jsonl: train loss per logged step, forgetting per eval step."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = {p["step"]: p["loss"] for p in lines if p["kind"] == "train"}
    forgetting = {p["step"]: p["forgetting"] for p in lines if p["kind"] == "eval"}
    return train, forgetting


def _wandb(out: Path) -> tuple[dict[str, dict[int, float]], dict, int | None]:
    """(history per key and step, config, exit code) of the run's one offline run directory."""
    import wandb

    wandb.teardown()  # run.finish() returns before wandb's service has flushed the .wandb file
    (run_dir,) = (out / "wandb").glob("offline-run-*")  # offline: no 'run-*' (online) directory
    (path,) = run_dir.glob("run-*.wandb")
    history: dict[str, dict[int, float]] = {}
    config, exit_code = {}, None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:  # value_json, or a typed field in newer versions
                value = (json.loads(item.value_json) if item.value_json
                         else getattr(item, item.WhichOneof("value")))
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, {})[record.history.step.num] = value
        elif kind == "run":
            config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return history, config, exit_code


def _mlflow(uri: str, experiment: str):
    """(the experiment's one run, metric history per key and step) through MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    history = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
               for key in run.data.metrics}
    return run, history


def _check(seen: dict[str, dict[int, float]], out: Path, rel: float) -> None:
    train, forgetting = _jsonl(out)
    assert sorted(train) == [2, 4] and sorted(forgetting) == [0, 2, 4]  # the reference is not empty
    assert seen["train/loss"] == pytest.approx(train, rel=rel)
    assert seen["eval/forgetting_loss"] == pytest.approx(forgetting, rel=rel)  # the callback's tag
    assert seen["eval/val_loss"] == pytest.approx(forgetting, rel=rel)


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow"])
def test_tracker_holds_the_runs_metrics(corpus_dir, tmp_path, tiny, tracker) -> None:
    pytest.importorskip(tracker)
    out = tmp_path / "run"
    try:  # run inside an except block, as a sweep retrying a failed run would: not this run's error
        raise KeyError("an earlier run's")
    except KeyError:
        result = pretrain(PretrainConfig(**tiny, **SHORT, corpus=str(corpus_dir),
                                         trackers=[tracker], out_dir=out))
    assert result.status == "done"
    if tracker == "tensorboard":
        _check(tensorboard(out / "tensorboard"), out, rel=1e-6)  # event files hold float32
        (hparams,) = (out / "tensorboard").glob("*/hparams.yml")  # accelerate's config record
        config = yaml.safe_load(hparams.read_text())
        assert config["optimizer"] == "adamw" and config["steps"] == 4
    elif tracker == "wandb":
        history, config, exit_code = _wandb(out)
        _check(history, out, rel=1e-12)
        assert config["optimizer"] == "adamw" and config["steps"] == 4 and exit_code == 0
    else:  # default store: a SQLite file in the run directory, experiment "forgetless"
        run, history = _mlflow(f"sqlite:///{out / 'mlflow.db'}", "forgetless")
        _check(history, out, rel=1e-12)
        assert run.info.status == "FINISHED" and run.info.run_name == "run"
        assert run.data.params["optimizer"] == "adamw" and run.data.params["steps"] == "4"
    home = [p for var in ("home", "xdg_config_home", "xdg_cache_home", "xdg_data_home")
            for p in (tmp_path / "env" / var).rglob("*")]
    assert home == []  # nothing written to the (stand-in) home or XDG directories


class Killed(Exception):
    pass


def test_failed_run_closes_every_tracker(corpus_dir, tmp_path, tiny, monkeypatch) -> None:
    for package in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(package)
    uri = f"sqlite:///{tmp_path / 'sweep.db'}"  # the user's own store and experiment are honoured
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweep")

    def kill_at_2(point):
        if point["step"] == 2:
            raise Killed

    out = tmp_path / "run"
    cfg = PretrainConfig(**tiny, **SHORT, corpus=str(corpus_dir),
                         trackers=["tensorboard", "wandb", "mlflow"], out_dir=out)
    with pytest.raises(Killed):
        pretrain(cfg, on_eval=kill_at_2)
    train, forgetting = _jsonl(out)
    assert train.keys() == {2} and forgetting.keys() == {0, 2}
    events = tensorboard(out / "tensorboard")  # flushed by close: the writer's queue would otherwise hold them
    assert events["train/loss"] == pytest.approx(train, rel=1e-6)
    history, _, exit_code = _wandb(out)
    assert history["eval/forgetting_loss"] == pytest.approx(forgetting, rel=1e-12)
    assert exit_code == 1  # marked failed
    run, history = _mlflow(uri, "sweep")
    assert history["train/loss"] == pytest.approx(train, rel=1e-12)
    assert run.info.status == "FAILED"
    assert not (out / "mlflow.db").exists()


def test_tracker_that_fails_to_open_closes_the_others(tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    closed = []
    real_finish = trackers_module._TensorBoard.finish

    def finish(self):
        closed.append(self)
        real_finish(self)

    def refuse(self, run_dir, config):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(trackers_module._TensorBoard, "finish", finish)
    monkeypatch.setattr(trackers_module._Wandb, "__init__", refuse)
    monkeypatch.setattr(importlib.util, "find_spec", _find_spec(present={"wandb"}))
    with pytest.raises(RuntimeError, match="no wandb today"):
        trackers_module.open_trackers(["tensorboard", "wandb"], tmp_path, {"seed": 0})
    assert len(closed) == 1  # the TensorBoard writer opened first was closed, not left behind


def test_how_a_run_ended_is_read_from_the_exception_in_flight() -> None:
    ending = trackers_module._ending
    assert ending(None) == "finished"
    for error, expected in ((KeyboardInterrupt(), "killed"), (RuntimeError(), "failed")):
        try:
            raise error
        except BaseException:  # what finish() sees inside the loop's `finally`
            assert ending(None) == expected
            assert ending(error) == "finished"  # in flight already when the tracker opened


def test_wandb_mode_from_the_environment_wins(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's setting replaces the offline default
    (tracker,) = trackers_module.open_trackers(["wandb"], tmp_path, {"seed": 0})
    assert isinstance(tracker, GeneralTracker)  # accelerate's tracker interface
    tracker.log({"train/loss": 1.0}, 1)
    tracker.finish()
    assert tracker.run.disabled and not list(tmp_path.rglob("*.wandb"))


def _find_spec(gone: set[str] = frozenset(), present: set[str] = frozenset()):
    """importlib.util.find_spec as if the packages in `gone` were not installed (and those in
    `present` were)."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in gone:
            return None
        if name in present:
            return importlib.machinery.ModuleSpec(name, None)
        return real(name, *args, **kwargs)

    return find_spec


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow"])
def test_missing_package_is_a_clear_error_before_training(corpus_dir, tmp_path, tiny, monkeypatch,
                                                           tracker) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", _find_spec(gone={tracker}))
    cfg = PretrainConfig(**tiny, **SHORT, corpus=str(corpus_dir), trackers=[tracker],
                         out_dir=tmp_path / "run")
    message = rf"tracker '{tracker}' needs the {tracker} package: pip install {tracker}"
    with pytest.raises(ValueError, match=message):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_mlflow_default_store_needs_a_database_layer(monkeypatch) -> None:
    find_spec = _find_spec(gone={"alembic"}, present={"mlflow", "sqlalchemy"})
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    message = r"mlflow.db, which needs alembic: pip install alembic.*MLFLOW_TRACKING_URI"
    with pytest.raises(ValueError, match=message):
        trackers_module.check_trackers(["mlflow"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a server: no local database
    trackers_module.check_trackers(["mlflow"])
