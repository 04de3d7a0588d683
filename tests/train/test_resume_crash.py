"""A run killed at any write resumes to the same weights and metrics as a run never killed.

The kill is injected at the k-th write of the run: half a metrics line appended, a trainer-state
file written short, an atomic rename not yet done or just done (checkpoint directories, status.json,
config.yaml, the rewritten metrics.jsonl). `Crash` is a BaseException, so nothing in the training
loop handles it: the files are left exactly as a SIGKILL at that instant would leave them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from forgetless.train import PretrainConfig, pretrain
from forgetless.train import checkpoint as checkpoint_module
from forgetless.train.rundir import RunDir

VOLATILE = ("wall_time", "tokens_per_s", "updated")  # clock readings: differ between any two runs


class Crash(BaseException):
    """Stands in for SIGKILL."""


class Injector:
    """Counts the crash points the run passes; raises Crash at point `target` (None: never)."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.kinds: list[str] = []

    def hit(self, kind: str) -> bool:
        self.kinds.append(kind)
        return len(self.kinds) - 1 == self.target


@pytest.fixture
def inject(monkeypatch, tmp_path) -> Injector:
    inj = Injector()
    real_append, real_save, real_replace = RunDir.append_metrics, checkpoint_module.save_file, os.replace
    root = str(tmp_path)

    def append(self, record):
        line = json.dumps(record) + "\n"
        if inj.hit("metrics append"):
            with open(self.metrics_path, "a") as f:
                f.write(line[: len(line) // 2])
            raise Crash
        real_append(self, record)

    def save(tensors, filename, *args, **kwargs):
        real_save(tensors, filename, *args, **kwargs)
        if inj.hit("state write"):
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            raise Crash

    def replace(src, dst, *args, **kwargs):
        if not str(dst).startswith(root):
            return real_replace(src, dst, *args, **kwargs)
        if inj.hit("before rename"):
            raise Crash
        real_replace(src, dst, *args, **kwargs)
        if inj.hit("after rename"):
            raise Crash

    monkeypatch.setattr(RunDir, "append_metrics", append)
    monkeypatch.setattr(checkpoint_module, "save_file", save)
    monkeypatch.setattr(os, "replace", replace)
    return inj


def _config(common: dict, out: Path, resume: bool = False) -> PretrainConfig:
    return PretrainConfig(**common, out_dir=out, resume=resume)


def _outcome(out: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    final = sorted((out / "checkpoints").glob("step-*"))[-1]
    weights = load_file(str(final / "model.safetensors"))
    records = [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
               for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    return weights, records


def _same(a: tuple, b: tuple, what: str) -> None:
    assert a[0].keys() == b[0].keys(), what
    for key in a[0]:
        assert torch.equal(a[0][key], b[0][key]), (what, key)  # bit-identical
    assert a[1] == b[1], what


@pytest.fixture
def common(corpus_dir, tiny) -> dict:
    return dict(tiny, corpus=str(corpus_dir), optimizer="adamw", steps=4, eval_every=2, save_every=2,
                eval_tokens=256, dropout=0.1, keep_checkpoints=2, console=False)


def test_killed_at_random_writes_resumes_bit_identical(common, tmp_path, inject) -> None:
    pretrain(_config(common, tmp_path / "whole"))
    reference = _outcome(tmp_path / "whole")
    kinds = list(inject.kinds)
    by_kind: dict[str, list[int]] = {}
    for k, kind in enumerate(kinds):
        by_kind.setdefault(kind, []).append(k)
    assert set(by_kind) == {"metrics append", "state write", "before rename", "after rename"}
    rng = random.Random(15)
    points = sorted({k for ks in by_kind.values() for k in rng.sample(ks, min(3, len(ks)))})
    assert len(points) >= 10, by_kind
    for k in points:
        out = tmp_path / f"cut-{k}"
        inject.kinds, inject.target = [], k
        with pytest.raises(Crash):
            pretrain(_config(common, out))
        inject.target = None
        pretrain(_config(common, out, resume=True))
        _same(_outcome(out), reference, f"killed at write {k} ({kinds[k]})")


def test_torn_line_damaged_checkpoint_and_moved_directory(common, tmp_path, inject, capsys) -> None:
    pretrain(_config(common, tmp_path / "whole"))
    reference = _outcome(tmp_path / "whole")
    # Killed while appending the step-4 eval line: the step-2 checkpoint is the newest.
    appends = [k for k, kind in enumerate(inject.kinds) if kind == "metrics append"]
    inject.kinds, inject.target = [], appends[-1]
    with pytest.raises(Crash):
        pretrain(_config(common, tmp_path / "cut"))
    inject.target = None
    run = tmp_path / "cut"
    assert not (run / "metrics.jsonl").read_text().endswith("\n")  # a torn last line
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "running" and status["step"] == 2  # updated at the step-2 checkpoint

    # The run directory is moved, and its newest checkpoint (there is only step 2) damaged in a
    # copy: resume refuses it with the file named and changes nothing.
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(run, moved)
    broken = tmp_path / "broken"
    shutil.copytree(moved, broken)
    (broken / "checkpoints" / "step-000002" / "trainer_state.json").write_text('{"__dict__": [')
    with pytest.raises(ValueError, match="trainer state unreadable"):
        pretrain(_config(common, broken, resume=True))
    assert (broken / "checkpoints" / "step-000002").is_dir()

    capsys.readouterr()
    pretrain(_config(common, moved, resume=True))
    assert "dropped 1 partial line" in capsys.readouterr().err
    _same(_outcome(moved), reference, "torn line, moved directory")

    # Two checkpoints kept: the newest damaged, resume falls back to the one before and says so.
    keep = tmp_path / "two"
    inject.kinds, inject.target = [], None
    pretrain(_config(common, keep))
    (keep / "status.json").write_text(json.dumps({"status": "running", "step": 4}))  # as if killed
    ckpt4 = keep / "checkpoints" / "step-000004"
    (ckpt4 / "trainer_state.safetensors").write_bytes(b"\x00" * 10)
    capsys.readouterr()
    pretrain(_config(common, keep, resume=True))
    err = capsys.readouterr().err
    assert "step-000004/trainer_state.safetensors is truncated or corrupt" in err
    assert "resuming from step-000002" in err
    assert (keep / "checkpoints" / ".corrupt-step-000004").is_dir()  # kept aside, not deleted
    _same(_outcome(keep), reference, "fallback to the previous checkpoint")
