"""`forgetless sweep --backend ray` on a small local Ray instance, with the stand-in executor of
_fake_train.py run inside Ray tasks (separate worker processes; the driver writes the store).

References: the closed-form points of _fake_train, and the local runner on the same study
(the same records must come out of both backends).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import _fake_train
import pytest
import yaml
from _fake_train import expected_point, fake_executor
from typer.testing import CliRunner

from forgetless.cli import app  # the root command: user errors become one line, exit code 2
from forgetless.sweep import runner as sweep_runner
from forgetless.sweep.store import Store
from forgetless.sweep.study import expand, load_study

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is an optional extra: pip install 'forgetless[ray]'")
cli = CliRunner()


def study_dict(out: Path, methods: list[dict] | None = None) -> dict:
    """A pretraining cell and its finetunes (one by default: two cells, one waiting for the other)."""
    return {
        "name": "rayfake",
        "out_dir": str(out),
        "pretrain": [{"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": 1000}],
        "finetune": {"tasks": ["arith"], "steps": 4, "eval_every": 2,
                     "methods": methods or [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4]}]},
    }


def dying_executor(cell, out_dir, base_dir, on_eval):
    """The fake, except that a cell with settings.fake == "die" kills its own process (as the
    kernel's OOM killer would), after one eval point."""
    if cell.config["settings"].get("fake") == "die":
        out_dir.mkdir(parents=True, exist_ok=True)
        on_eval({"step": 0, "tokens": 0, "forgetting": 4.0, "learning": 3.0, "wall_time": 0.0})
        os._exit(3)
    return fake_executor(cell, out_dir, base_dir, on_eval)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             log_to_driver=False)
    # Ray's workers do not see pytest's sys.path (tests/sweep): ship the test code by value.
    ray.cloudpickle.register_pickle_by_value(_fake_train)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def records(root: Path) -> dict:
    """Everything a backend writes that does not depend on where or when it ran."""
    out = {}
    with Store(root / "results.sqlite") as st:
        for r in st.runs("rayfake"):
            pts = [(p["step"], p["tokens"], p["forgetting"], p["learning"], p["accuracy"],
                    p["sources"], p["extra"]) for p in st.points(run_id=r["cell_id"])]
            where = {k: str(Path(r[k]).relative_to(root)) if r[k] else None for k in ("out_dir", "checkpoint")}
            out[r["cell_id"]] = {**{k: r[k] for k in ("status", "error", "attempts", "kind", "base_id",
                                                        "label", "method", "lr", "config", "meta")},
                                 **where, "points": pts}
    return out


def calls(root: Path, cid: str) -> list[str]:
    """The pids that executed a cell (one line per execution, written by the fake)."""
    return (root / "cells" / cid / "calls.txt").read_text().split()


def with_fake(monkeypatch) -> None:
    """The command line, with the stand-in executor in place of training."""
    real = sweep_runner.run_sweep
    monkeypatch.setattr(sweep_runner, "run_sweep", lambda st, **kw: real(st, executor=fake_executor, **kw))


@needs_ray
def test_two_cells_on_ray_give_the_local_runners_records_and_are_not_run_twice(tmp_path, local_ray,
                                                                            monkeypatch):
    raw = study_dict(tmp_path / "ray")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    with_fake(monkeypatch)
    res = cli.invoke(app, ["sweep", str(tmp_path / "study.yaml"), "--backend", "ray",
                           "--cpus-per-cell", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "on Ray" in res.output and "finished: 2 done" in res.output
    monkeypatch.undo()

    study = load_study(raw)
    pre, ft = expand(study)
    assert ft.base_id == pre.cell_id  # the fake asserted the finetune saw its base's files
    for cell in (pre, ft):  # run in a Ray worker process, not in the driver (this process)
        assert calls(tmp_path / "ray", cell.cell_id) != [str(os.getpid())]
    got = records(tmp_path / "ray")
    assert [p[:4] for p in got[ft.cell_id]["points"]] == [
        (s, s * 64, expected_point(1e-4, s)[0], expected_point(1e-4, s)[1]) for s in (0, 2, 4)]
    assert [p[2] for p in got[pre.cell_id]["points"]] == [
        expected_point(pre.lr, s)[0] for s in (0, 2, 4)]
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in got.values())

    sweep_runner.run_sweep(load_study(study_dict(tmp_path / "local")), workers=0,
                           executor=fake_executor, progress=False)
    assert records(tmp_path / "local") == got

    # A second invocation finds everything finished and runs nothing.
    lines: list[str] = []
    from forgetless.sweep.ray_backend import RayBackend

    counts = sweep_runner.run_sweep(study, backend=RayBackend(), executor=fake_executor,
                                    progress=False, log=lines.append, poll=0.05)
    assert counts == {"done": 2}
    assert "2 of 2 cells already finished; skipping them" in lines
    assert all(len(calls(tmp_path / "ray", c.cell_id)) == 1 for c in (pre, ft))
    assert records(tmp_path / "ray") == got


@needs_ray
def test_divergence_failure_and_a_dead_task_on_ray(tmp_path, local_ray):
    from forgetless.sweep.ray_backend import RayBackend

    methods = [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4]},
               {"kind": "full", "optimizer": "sgd", "lrs": [1e-4], "settings": {"fake": "explode"}},
               {"kind": "full", "optimizer": "muon", "lrs": [1e-4], "settings": {"fake": "nan"}},
               {"kind": "full", "optimizer": "lion", "lrs": [1e-4], "settings": {"fake": "fail"}},
               {"kind": "full", "optimizer": "signsgd", "lrs": [1e-4], "settings": {"fake": "die"}}]
    raw = study_dict(tmp_path / "ray", methods)
    study = load_study(raw)
    run = dict(executor=dying_executor, progress=False, poll=0.05)
    counts = sweep_runner.run_sweep(study, backend=RayBackend(max_in_flight=2), **run)
    assert counts == {"done": 2, "diverged": 2, "failed": 2}
    with Store(tmp_path / "ray" / "results.sqlite") as st:
        by = {r["method"]: r for r in st.runs("rayfake") if r["kind"] == "finetune"}
        exploded = by["full-sgd"]
        assert exploded["status"] == "diverged" and "above 4 x its start" in exploded["error"]
        # Points up to and including the one that crossed the line: 3, then 30 (> 4 x 3).
        assert [p["learning"] for p in st.points(run_id=exploded["cell_id"])] == [3.0, 30.0]
        assert by["full-muon"]["status"] == "diverged"
        assert len(st.points(run_id=by["full-muon"]["cell_id"])) == 2
        assert by["full-lion"]["status"] == "failed" and "fake failure" in by["full-lion"]["error"]
        died = by["full-signsgd"]
        assert died["status"] == "failed" and died["error"].startswith("Ray task died")
    # The same study on the local runner records the same outcomes for the cells that end by
    # themselves (a process killing itself is reported differently by each backend).
    local_methods = [m for m in methods if m.get("settings", {}).get("fake") != "die"]
    sweep_runner.run_sweep(load_study(study_dict(tmp_path / "local", local_methods)), workers=0,
                           executor=dying_executor, progress=False)
    got, want = records(tmp_path / "ray"), records(tmp_path / "local")
    assert {k: v for k, v in got.items() if k != died["cell_id"]} == want

    # Failed cells are retried once by the next invocation (and fail again); diverged and done
    # cells are final.
    counts = sweep_runner.run_sweep(study, backend=RayBackend(), **run)
    assert counts == {"done": 2, "diverged": 2, "failed": 2}
    assert len(calls(tmp_path / "ray", by["full-lion"]["cell_id"])) == 2
    for method in ("full-adamw", "full-sgd", "full-muon"):
        assert len(calls(tmp_path / "ray", by[method]["cell_id"])) == 1


@needs_ray
def test_a_killed_drivers_cell_is_taken_over_with_its_points_so_far(tmp_path, local_ray):
    """What a killed sweep leaves: a cell 'running' under a dead pid, with the points it had
    sent back. The next sweep takes the cell over, and its divergence check starts from the
    first point in the store (here 0.5, so the fake's task loss of 3.0 is above 4 x 0.5)."""
    from forgetless.sweep.ray_backend import RayBackend

    study = load_study(study_dict(tmp_path / "s"))
    pre, ft = expand(study)
    sweep_runner.run_sweep(study, backend=RayBackend(), executor=fake_executor, progress=False)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with Store(tmp_path / "s" / "results.sqlite") as st:
        st.reset(ft.cell_id)
        assert st.claim(ft.cell_id, f"{socket.gethostname()}:{gone.pid}")
        st.add_point(ft.cell_id, {"step": 0, "tokens": 0, "forgetting": 4.0, "learning": 0.5})
    counts = sweep_runner.run_sweep(study, backend=RayBackend(), executor=fake_executor, progress=False)
    assert counts == {"done": 1, "diverged": 1}
    with Store(tmp_path / "s" / "results.sqlite") as st:
        run = st.run(ft.cell_id)
        assert run["attempts"] == 3  # the first run, the killed one, this one
        assert run["error"] == ("loss 3 at step 0 is above 4 x its start 0.5 (eval_diverge_factor)")
    assert len(calls(tmp_path / "s", pre.cell_id)) == 1


def test_unknown_backend_and_missing_ray_are_refused_with_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_dict(tmp_path / "s")))
    res = cli.invoke(app, ["sweep", str(path), "--backend", "slurm"])
    assert res.exit_code == 2 and "--backend must be one of local, ray; got 'slurm'" in res.output
    with pytest.raises(ValueError, match="backend must be one of local, ray; got 'slurm'"):
        sweep_runner.run_sweep(load_study(study_dict(tmp_path / "s")), backend="slurm")
    res = cli.invoke(app, ["sweep", str(path), "--ray-address", "head:6379"])
    assert res.exit_code == 2 and "need --backend ray" in res.output

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is missing
    res = cli.invoke(app, ["sweep", str(path), "--backend", "ray"])
    assert res.exit_code == 2 and "pip install 'forgetless[ray]'" in res.output
    assert not (tmp_path / "s").exists()  # refused before any work


def test_an_address_where_no_cluster_listens_is_refused_at_once():
    from forgetless.sweep.ray_backend import RayBackendError, _check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RayBackendError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(RayBackendError, match="Ray Client address"):  # no streaming there
        _check_reachable(f"ray://127.0.0.1:{port}")
