"""A run directory belongs to one process at a time (issue 24 §3): two runs started together in
one --out used to both go ahead. The claim is an exclusive flock on <out>/.lock, taken before the
directory is looked at, and dropped by the kernel when its process dies (SIGKILL included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgetless.errors import RunBusy
from forgetless.train.rundir import RunDir, release

# Waits for GO to exist, then prepares the run directory and reports; holds it until killed.
RACER = """
import os, sys, time
from forgetless.train.rundir import RunDir
out, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
try:
    RunDir(out).prepare("lr: 0.001\\n", resume=False)
    print("claimed", flush=True)
except Exception as err:
    print("refused", type(err).__name__, err, flush=True)
time.sleep(600)
"""


def _racers(out: Path, go: Path, n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(go)], stdout=subprocess.PIPE,
                             text=True, start_new_session=True) for _ in range(n)]


def test_runs_started_together_in_one_directory_one_wins(tmp_path) -> None:
    out, go = tmp_path / "run", tmp_path / "GO"
    procs = _racers(out, go, 3)
    try:
        time.sleep(8)  # let all three import and wait on GO
        go.touch()
        lines = [p.stdout.readline().strip() for p in procs]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert sorted(line.split()[0] for line in lines) == ["claimed", "refused", "refused"], lines
    assert all("RunBusy" in line and "in use by another forgetless run" in line
               for line in lines if line.startswith("refused")), lines


def test_the_claim_dies_with_its_process(tmp_path) -> None:
    out, go = tmp_path / "run", tmp_path / "GO"
    go.touch()
    (holder,) = _racers(out, go, 1)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(RunBusy, match=f"pid {holder.pid}"):
            RunDir(out).prepare("lr: 0.001\n", resume=True)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert RunDir(out).prepare("lr: 0.001\n", resume=True) is None  # free once the holder is dead
    RunDir(out).prepare("lr: 0.001\n", resume=True)  # this process may claim it again
    release(out)


def test_a_run_that_raised_lets_go_of_its_directory(tmp_path) -> None:
    """pretrain()/finetune() release the claim however they end: a run that raised in a notebook
    or a sweep worker no longer holds its directory until the process exits."""
    from forgetless.train.rundir import claim_ends_with_the_call

    out, go = tmp_path / "run", tmp_path / "GO"
    with pytest.raises(RuntimeError), claim_ends_with_the_call(out):
        RunDir(out).prepare("lr: 0.001\n", resume=False)
        raise RuntimeError("the run failed half way")
    go.touch()
    (other,) = _racers(out, go, 1)
    try:
        assert other.stdout.readline().strip() == "claimed"  # it was "refused RunBusy" before the release
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()
