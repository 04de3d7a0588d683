"""The results store: records, claims across processes, versioning, export."""

from __future__ import annotations

import csv
import math
import multiprocessing as mp
import sqlite3

import pytest

from forgetless.sweep.export import export_csv, export_parquet
from forgetless.sweep.records import Cell
from forgetless.sweep.store import SCHEMA_VERSION, Store, StoreVersionError


def _cells(n: int) -> list[Cell]:
    return [Cell(f"c{i}", "finetune" if i else "pretrain", "c0" if i else None, f"cell {i}",
                 "full-adamw" if i else None, 1e-4 * i, {"i": i}, {"task": "arith", "base": "adamw"})
            for i in range(n)]


def test_records_round_trip_and_points_replace(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.add_study("t", {"name": "t"}, _cells(3))
        st.add_study("t", {"name": "t"}, _cells(3))  # idempotent
        assert [r["cell_id"] for r in st.runs("t")] == ["c0", "c1", "c2"]
        assert st.run("c1")["config"] == {"i": 1} and st.run("c1")["status"] == "pending"
        st.add_point("c1", {"step": 0, "tokens": 0, "forgetting": 4.0, "learning": 3.0, "accuracy": None,
                            "wall_time": 0.5, "forgetting_by_source": {"code": 4.2, "prose": 3.8}})
        st.add_point("c1", {"step": 5, "tokens": 80, "forgetting": 4.5, "learning": float("nan"),
                            "wall_time": 1.0, "train_loss": 2.0})
        st.add_point("c1", {"step": 5, "tokens": 80, "forgetting": 4.4, "learning": 2.0, "wall_time": 2.0})
        pts = st.points(run_id="c1")
        assert [(p["step"], p["forgetting"], p["learning"]) for p in pts] == [(0, 4.0, 3.0), (5, 4.4, 2.0)]
        assert pts[0]["sources"] == {"code": 4.2, "prose": 3.8} and pts[0]["accuracy"] is None
        assert pts[0]["meta"]["task"] == "arith"


def test_eval_points_are_the_stored_points_typed(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.add_study("t", {}, _cells(2))
        st.add_point("c0", {"step": 4, "tokens": 64, "forgetting": 5.0, "learning": None, "wall_time": 1.5})
        st.add_point("c1", {"step": 0, "tokens": 0, "forgetting": 4.0, "learning": 3.0, "accuracy": 0.25,
                            "forgetting_by_source": {"code": 4.2}})
        st.add_point("c1", {"step": -1, "tokens": 0, "forgetting": 4.1, "learning": 2.9, "wise": 0.5})
        pre, wise, first = st.eval_points(study="t")  # by run (insertion order), then step
        # A pretraining point optimises the held-out loss and has no task loss.
        assert (pre.run_id, pre.kind, pre.step, pre.tokens, pre.loss) == ("c0", "pretrain", 4, 64, 5.0)
        assert math.isnan(pre.learning) and pre.accuracy is None and pre.wall_time == 1.5
        # A finetune point optimises the task loss; its run's labels come with it.
        assert (first.step, first.loss, first.forgetting, first.accuracy) == (0, 3.0, 4.0, 0.25)
        assert first.sources == {"code": 4.2} and first.meta == {"task": "arith", "base": "adamw"}
        assert (first.label, first.method, first.lr, first.base_id) == ("cell 1", "full-adamw", 1e-4, "c0")
        assert wise.wise and not first.wise and wise.extra == {"wise": 0.5}
        assert st.eval_points(run_id="c0") == [pre]


def test_nan_point_reads_back_as_nan(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.add_study("t", {}, _cells(2))
        st.add_point("c1", {"step": 1, "forgetting": float("inf"), "learning": float("nan")})
        p = st.points(run_id="c1")[0]
        assert p["forgetting"] == math.inf and math.isnan(p["learning"])


def test_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade forgetless"):
        Store(path)
    assert path.read_bytes() == before


def test_claim_is_exclusive_and_stale_owners_are_reclaimed(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.add_study("t", {}, _cells(2))
        assert st.claim("c0", "myhost:1")
        assert not st.claim("c0", "myhost:2")  # running, fresh heartbeat, other host's pid unknown
        assert st.claim("c0", "other:3", stale_after=-1)  # heartbeat older than stale_after
        st.finish("c0", "failed", error="boom")
        assert not st.claim("c0", "other:4")  # failed cells wait for requeue_failed
        assert st.requeue_failed(["c0", "c1"]) == 1
        assert st.claim("c0", "other:4")
        assert st.run("c0")["attempts"] == 3


def _claimer(path: str, owner: str, ids: list[str], q) -> None:
    st = Store(path)
    got = [cid for cid in ids if st.claim(cid, owner)]
    for cid in got:  # write points concurrently with the other process
        for step in range(5):
            st.add_point(cid, {"step": step, "tokens": step, "forgetting": 1.0, "learning": 2.0})
        st.finish(cid, "done")
    q.put(got)


def test_two_processes_claim_disjoint_cells_and_write_concurrently(tmp_path):
    path = str(tmp_path / "s.sqlite")
    with Store(path) as st:
        st.add_study("t", {}, _cells(40))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ids = [f"c{i}" for i in range(40)]
    # Each process walks the cells in a different order, so they meet in the middle.
    procs = [ctx.Process(target=_claimer, args=(path, f"h:{k}", order, q))
             for k, order in enumerate([ids, ids[::-1]])]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == sorted(ids)
    with Store(path) as st:
        assert all(r["attempts"] == 1 and r["status"] == "done" for r in st.runs("t"))
        assert len(st.points(study="t")) == 40 * 5
        assert st.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_export_csv_and_parquet(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.add_study("t", {}, _cells(3))
        for cid in ("c1", "c2"):
            for step in (0, 10):
                st.add_point(cid, {"step": step, "tokens": step * 16, "forgetting": 4 + step / 100,
                                   "learning": 3 - step / 100, "wall_time": 1.0})
        assert export_csv(st, tmp_path / "o.csv", study="t") == 4
        rows = list(csv.DictReader(open(tmp_path / "o.csv")))
        assert [(r["run_id"], int(r["step"]), float(r["forgetting"])) for r in rows] == [
            ("c1", 0, 4.0), ("c1", 10, 4.1), ("c2", 0, 4.0), ("c2", 10, 4.1)]
        assert rows[0]["task"] == "arith" and rows[0]["accuracy"] == ""
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        assert export_parquet(st, tmp_path / "o.parquet", study="t") == 4
        df = pd.read_parquet(tmp_path / "o.parquet")
        assert df["learning"].tolist() == [3.0, 2.9, 3.0, 2.9]
