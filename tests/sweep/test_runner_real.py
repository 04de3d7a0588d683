"""A tiny real sweep through forgetless.train: SIGKILL and resume, two runners, a diverging cell.

The reference is the same study run once, uninterrupted, by a single runner: every other way of
running it must end with exactly the same eval points in the store.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from forgetless.sweep.runner import run_sweep
from forgetless.sweep.store import Store
from forgetless.sweep.study import load_study


def tiny_study(corpus: str, out: Path) -> dict:
    return {
        "name": "tiny",
        "out_dir": str(out),
        "data": {"corpus": corpus, "vocab_size": 512},
        "pretrain": [{"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": "6k",
                      "settings": {"seq_len": 32, "batch_size": 8, "eval_tokens": 1024, "eval_every": 8}}],
        "finetune": {
            "tasks": [{"name": "arith", "settings": {"train_n": 32, "eval_n": 8}}],
            "steps": 6,
            "eval_every": 2,
            "settings": {"seq_len": 128, "batch_size": 4, "eval_tokens": 512},
            "methods": [
                {"kind": "full", "optimizer": "adamw", "lrs": [3e-4]},
                {"kind": "lora", "lora_rank": 4, "optimizer": "adamw", "lrs": [1e-3]},
                # Diverges: a step of lr 30 sends the task loss far above 4 x its start.
                {"kind": "full", "optimizer": "sgd", "lrs": [30.0]},
            ],
        },
    }


def contents(out: Path) -> dict:
    """What a run must reproduce: status and eval points of every cell (not timings)."""
    with Store(out / "results.sqlite") as st:
        runs = {r["cell_id"]: r["status"] for r in st.runs("tiny")}
        pts = {}
        for p in st.points(study="tiny"):
            pts.setdefault(p["run_id"], []).append(
                (p["step"], p["tokens"], p["forgetting"], None if p["kind"] == "pretrain" else p["learning"]))
    return {"status": runs, "points": pts}


@pytest.fixture(scope="module")
def reference(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    study = load_study(tiny_study(small_corpus, out))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the runners below: same threads, bit-identical floats
    try:
        counts = run_sweep(study, workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    return study, out, counts, contents(out)


def test_uninterrupted_sweep_records_everything_and_the_divergence(reference):
    study, out, counts, ref = reference
    assert counts == {"done": 3, "diverged": 1}
    with Store(out / "results.sqlite") as st:
        runs = {r["method"]: r for r in st.runs("tiny")}
        bad = runs["full-sgd"]
        assert bad["status"] == "diverged" and "loss" in bad["error"]
        # Its points so far are kept: at least the base point at step 0.
        assert ref["points"][bad["cell_id"]][0][0] == 0
        for method in ("full-adamw", "lora4-adamw"):
            steps = [p[0] for p in ref["points"][runs[method]["cell_id"]]]
            assert steps == [0, 2, 4, 6]
        # Every finetune starts from the same base: identical step-0 points.
        step0 = {ref["points"][runs[m]["cell_id"]][0][2:] for m in ("full-adamw", "lora4-adamw", "full-sgd")}
        assert len(step0) == 1


RUNNER = """
import yaml
from forgetless.sweep.runner import run_sweep
from forgetless.sweep.study import load_study
run_sweep(load_study(yaml.safe_load(open({path!r}))), workers={workers}, progress=False, poll=0.05)
"""


def _start(study_file: Path, workers: int = 0) -> subprocess.Popen:
    """A runner in its own session, training in its own process (workers=0) on one thread like
    the reference, so float results can be compared bit for bit."""
    script = RUNNER.format(path=str(study_file), workers=workers)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, env=env)


def _n_points(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with Store(db) as st:
            return len(st.points(study="tiny"))
    except Exception:  # the schema is being created right now
        return 0


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_results(reference, small_corpus, tmp_path):
    _, _, _, ref = reference
    total = sum(len(v) for v in ref["points"].values())
    rng = random.Random(5)
    kills = sorted(rng.sample(range(2, total - 2), 2))  # kill after this many points are stored
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(tiny_study(small_corpus, tmp_path / "out")))
    db = tmp_path / "out" / "results.sqlite"
    for at in kills:
        p = _start(study_file)
        deadline = time.time() + 120
        while _n_points(db) < at and p.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)  # wherever it is: training, evaluating, saving, writing
        p.wait()
    p = _start(study_file)
    assert p.wait(timeout=180) == 0
    assert contents(tmp_path / "out") == ref
    with Store(db) as st:
        assert max(r["attempts"] for r in st.runs("tiny")) >= 2  # something was really resumed


def test_two_runners_at_once_share_the_work_and_match(reference, small_corpus, tmp_path):
    _, _, _, ref = reference
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(tiny_study(small_corpus, tmp_path / "out")))
    procs = [_start(study_file) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=180) == 0
    assert contents(tmp_path / "out") == ref
    with Store(tmp_path / "out" / "results.sqlite") as st:
        assert all(r["attempts"] == 1 for r in st.runs("tiny"))  # no cell ran twice
        assert st.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for cell_dir in (tmp_path / "out" / "cells").iterdir():  # one run per directory, never two
        evals = [line for line in (cell_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
        steps = [yaml.safe_load(line)["step"] for line in evals]
        assert steps == sorted(set(steps))
