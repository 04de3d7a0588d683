"""Runner logic with the stand-in executor of _fake_train.py (ordering, claiming, failures).

The same properties on real training runs are in test_runner_real.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _fake_train import expected_point, fake_executor

from forgetless.sweep.runner import run_sweep
from forgetless.sweep.store import Store
from forgetless.sweep.study import expand, load_study

HERE = Path(__file__).parent


def study_dict(out: Path, **ft_settings) -> dict:
    return {
        "name": "fake",
        "out_dir": str(out),
        "pretrain": [{"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": 1000},
                     {"name": "muon", "model": "nano", "optimizer": "muon", "tokens": 1000}],
        "finetune": {"tasks": ["arith"], "steps": 4, "eval_every": 2, "settings": ft_settings,
                     "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4, 3e-4]},
                                 {"kind": "full", "optimizer": "muon", "lrs": [1e-4]}]},
    }


def check_complete(out: Path, study) -> None:
    """Every cell done once, with exactly the closed-form points of _fake_train."""
    with Store(out / "results.sqlite") as st:
        for cell in expand(study):
            run = st.run(cell.cell_id)
            assert run["status"] == "done", run
            got = [(p["step"], p["forgetting"]) for p in st.points(run_id=cell.cell_id)]
            want = [(s, expected_point(cell.lr, s)[0]) for s in range(0, 5, 2)]
            assert got == want


def test_in_process_sweep_runs_in_dependency_order(tmp_path):
    study = load_study(study_dict(tmp_path / "s"))
    counts = run_sweep(study, workers=0, executor=fake_executor, progress=False)
    assert counts == {"done": 2 + 2 * 3}
    check_complete(tmp_path / "s", study)  # the fake asserts each finetune saw its base's checkpoint
    # A second run does no work twice.
    counts = run_sweep(study, workers=0, executor=fake_executor, progress=False)
    assert counts == {"done": 8}
    calls = list((tmp_path / "s" / "cells").glob("*/calls.txt"))
    assert len(calls) == 8 and all(len(c.read_text().splitlines()) == 1 for c in calls)


def test_pool_of_two_workers(tmp_path):
    study = load_study(study_dict(tmp_path / "s"))
    lines: list[str] = []
    counts = run_sweep(study, workers=2, executor=fake_executor, progress=False, poll=0.05, log=lines.append)
    assert counts == {"done": 8}
    assert sum(line.strip().startswith("done") for line in lines) == 8  # a line per finished cell
    check_complete(tmp_path / "s", study)


def test_divergence_and_failure_are_recorded_and_the_sweep_goes_on(tmp_path):
    raw = study_dict(tmp_path / "s")
    methods = raw["finetune"]["methods"]
    methods.append({"kind": "full", "optimizer": "sgd", "lrs": [1e-4], "settings": {"fake": "explode"}})
    methods.append({"kind": "full", "optimizer": "lion", "lrs": [1e-4], "settings": {"fake": "fail"}})
    methods.append({"kind": "full", "optimizer": "signsgd", "lrs": [1e-4], "settings": {"fake": "nan"}})
    study = load_study(raw)
    counts = run_sweep(study, workers=0, executor=fake_executor, progress=False)
    assert counts == {"done": 8, "diverged": 4, "failed": 2}
    with Store(tmp_path / "s" / "results.sqlite") as st:
        runs = {r["method"]: r for r in st.runs("fake") if r["base_id"] and "adamw" in r["label"][:5]}
        exploded = runs["full-sgd"]
        assert "above 4 x its start" in exploded["error"]
        # Points up to and including the one that crossed the line are kept: 3, 30 (> 4 x 3).
        assert [p["learning"] for p in st.points(run_id=exploded["cell_id"])] == [3.0, 30.0]
        assert "fake failure" in runs["full-lion"]["error"]
        assert len(st.points(run_id=runs["full-signsgd"]["cell_id"])) == 2
    # Failed cells are retried by the next invocation (and fail again here); diverged ones are final.
    counts = run_sweep(study, workers=0, executor=fake_executor, progress=False)
    assert counts == {"done": 8, "diverged": 4, "failed": 2}


def test_failed_base_fails_its_finetunes_without_running_them(tmp_path):
    raw = study_dict(tmp_path / "s")
    raw["pretrain"][1]["settings"] = {"fake": "fail"}
    study = load_study(raw)
    counts = run_sweep(study, workers=0, executor=fake_executor, progress=False)
    assert counts == {"done": 4, "failed": 4}
    with Store(tmp_path / "s" / "results.sqlite") as st:
        errors = [r["error"] for r in st.runs("fake") if r["status"] == "failed" and r["kind"] == "finetune"]
        assert len(errors) == 3 and all("base muon failed; not run" in e for e in errors)


RUNNER = """
import sys
sys.path.insert(0, {here!r})
from _fake_train import fake_executor
from forgetless.sweep.runner import run_sweep
from forgetless.sweep.study import load_study
import yaml
study = load_study(yaml.safe_load(open({path!r})))
run_sweep(study, workers={workers}, executor=fake_executor, progress=False, poll=0.05)
"""


def _start(tmp_path: Path, workers: int) -> subprocess.Popen:
    script = RUNNER.format(here=str(HERE), path=str(tmp_path / "study.yaml"), workers=workers)
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _write(tmp_path: Path, raw: dict) -> None:
    import yaml

    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))


def _live_in_session(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "stat=,pid=", "-s", str(sid)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.strip() and not line.strip().startswith("Z")]


def test_sigkill_of_the_runner_alone_takes_its_workers_down(tmp_path):
    """Kill the runner only: its pool workers must notice and exit (no orphan keeps training),
    and the next run finishes with exactly the results of a run never killed. Killing runner
    and workers together, on real training runs, is in test_runner_real.py."""
    raw = study_dict(tmp_path / "s", sleep=0.2)
    _write(tmp_path, raw)
    db = tmp_path / "s" / "results.sqlite"

    p = _start(tmp_path, workers=2)
    deadline = time.time() + 90
    while time.time() < deadline:  # until a worker is in the middle of a cell
        if db.exists():
            with Store(db) as st:
                if any(r["status"] == "running" for r in st.runs("fake")):
                    break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)  # only the runner
    p.wait()
    deadline = time.time() + 30
    while _live_in_session(p.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _live_in_session(p.pid) == []  # no orphan worker keeps training
    p = _start(tmp_path, workers=2)
    assert p.wait(timeout=120) == 0
    check_complete(tmp_path / "s", load_study(raw))
