"""Store.points, the dict path of earlier versions, still answers for old code but warns; every
reader in forgetless goes through Store.eval_points (issue 25)."""

from __future__ import annotations

import warnings

import pytest

from forgetless.sweep.export import export_rows
from forgetless.sweep.records import Cell
from forgetless.sweep.store import Store


def _store(path) -> Store:
    st = Store(path)
    st.add_study("t", {"name": "t"}, [Cell("b", "pretrain", None, "base", None, None, {}, {}),
                                      Cell("f", "finetune", "b", "ft", "full-adamw", 1e-3, {},
                                           {"task": "arith", "base": "adamw", "seed": 2})])
    st.add_point("f", {"step": 4, "tokens": 64, "forgetting": 4.5, "learning": 2.0, "wall_time": 1.0,
                       "kl_to_base": 0.25})
    st.finish("f", "done")
    return st


def test_points_warns_and_gives_the_same_points_as_dicts(tmp_path):
    with _store(tmp_path / "s.sqlite") as st:
        with pytest.warns(DeprecationWarning, match="eval_points"):
            old = st.points(study="t")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the typed path does not warn
            new = st.eval_points(study="t")
    assert len(old) == len(new) == 1
    assert (old[0]["run_id"], old[0]["step"], old[0]["forgetting"], old[0]["learning"]) == ("f", 4, 4.5, 2.0)
    assert (new[0].run_id, new[0].step, new[0].forgetting, new[0].learning) == ("f", 4, 4.5, 2.0)
    assert old[0]["status"] == "done" and new[0].value("kl_to_base") == 0.25


def test_export_reads_the_typed_points_without_the_warning(tmp_path):
    with _store(tmp_path / "s.sqlite") as st:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rows = export_rows(st, "t")
    assert len(rows) == 1
    row = rows[0]
    # What was written above, with the run's columns and labels (seed: the finetune's).
    assert (row["run_id"], row["status"], row["method"], row["lr"], row["task"], row["seed"]) == \
        ("f", "done", "full-adamw", 1e-3, "arith", 2)
    assert (row["step"], row["tokens"], row["forgetting"], row["learning"], row["wall_time"]) == (4, 64, 4.5, 2.0, 1.0)
    assert row["accuracy"] is None and row["kl_to_base"] == 0.25 and row["sources"] == ""
    assert list(row)[:7] == ["run_id", "kind", "label", "method", "lr", "base_id", "status"]
