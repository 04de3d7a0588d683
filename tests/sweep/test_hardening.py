"""Issue 15 in the sweep: finished cells are printed without the progress bar, a cell whose runner
died shows as stale, and a study base that is a forgetless run directory resolves to its checkpoint
and is checked before any cell starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _fake_train import fake_executor
from typer.testing import CliRunner

from forgetless.cli import app
from forgetless.sweep.execute import check_study, train_config
from forgetless.sweep.runner import run_sweep
from forgetless.sweep.store import Store
from forgetless.sweep.study import StudyError, expand, load_study


def _raw(out: Path) -> dict:
    return {"name": "h", "out_dir": str(out),
            "pretrain": [{"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": 1000}],
            "finetune": {"tasks": ["arith"], "steps": 4, "eval_every": 2,
                         "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4, 3e-4]}]}}


def test_no_progress_still_prints_each_finished_cell(tmp_path, capsys) -> None:
    study = load_study(_raw(tmp_path / "s"))
    run_sweep(study, workers=0, executor=fake_executor, progress=False)
    lines = capsys.readouterr().out.splitlines()
    for cell in expand(study):
        assert any(line.split() == ["done", cell.label, "in", line.split()[-1]] for line in lines), \
            (cell.label, lines)


def test_status_shows_a_dead_runner_as_stale(tmp_path) -> None:
    raw = _raw(tmp_path / "s")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = load_study(raw)
    cells = expand(study)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs (reaped)
    with Store(tmp_path / "s" / "results.sqlite") as store:
        store.add_study(study.name, study.model_dump(mode="json"), cells)
        assert store.claim(cells[0].cell_id, f"{socket.gethostname()}:{gone.pid}")
    res = CliRunner().invoke(app, ["status", str(path)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "stale (runner gone)" in res.output
    assert "2 pending, 1 stale (runner gone) of 3 cells" in res.output


def _run_dir(root: Path) -> Path:
    """A forgetless run directory: checkpoints/step-N with a model config (no weights needed)."""
    for step in (2, 4):
        ckpt = root / "checkpoints" / f"step-{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text("{}")
    return root


def test_a_run_directory_base_resolves_to_its_checkpoint(tmp_path) -> None:
    run = _run_dir(tmp_path / "runs" / "muon")
    raw = _raw(tmp_path / "s")
    raw.pop("pretrain")
    raw["bases"] = [{"name": "mine", "checkpoint": str(run), "optimizer": "muon"}]
    study = load_study(raw)
    check_study(study)
    cell = expand(study)[0]
    cfg = train_config(cell, tmp_path / "cell", None)
    assert cfg.base == str(run)  # finetune reads the run's own config.yaml from here
    assert cfg.forget_tokenizer == str(run / "checkpoints" / "step-000004")  # its newest checkpoint


@pytest.mark.parametrize("checkpoint", ["./typo", "runs/typo"])
def test_a_missing_base_is_refused_before_any_cell(tmp_path, monkeypatch, checkpoint) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # runs/typo: a local folder's child, never a hub name
    raw = _raw(tmp_path / "s")
    raw["bases"] = [{"name": "mine", "checkpoint": checkpoint, "optimizer": "adamw"}]
    with pytest.raises(StudyError, match="no such checkpoint"):
        run_sweep(load_study(raw), workers=0, progress=False)
    assert not (tmp_path / "s").exists()
