"""The command line: sweep / status / frontier / export, on a store filled by the stand-in executor."""

from __future__ import annotations

import csv
import sqlite3

import numpy as np
import pytest
import yaml
from _fake_train import fake_executor
from typer.testing import CliRunner

from forgetless.analysis.frontier import panels, summarize
from forgetless.cli import app  # the root command: user errors become one line, exit code 2
from forgetless.sweep.runner import run_sweep
from forgetless.sweep.store import Store
from forgetless.sweep.study import load_study

runner = CliRunner()


def raw_study(out) -> dict:
    return {
        "name": "cli",
        "out_dir": str(out),
        "pretrain": [{"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": 1000},
                     {"name": "muon", "model": "nano", "optimizer": "muon", "tokens": 1000}],
        "finetune": [
            {"tasks": ["arith"], "steps": 8, "eval_every": 2,
             "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4, 3e-4]},
                         {"kind": "lora", "lora_rank": 8, "optimizer": "adamw", "lrs": [1e-3]}]},
            {"tasks": ["arith"], "bases": ["adamw"], "steps": 8, "eval_every": 2,
             "methods": [{"kind": "full", "optimizer": "sgd", "lrs": [1e-4], "settings": {"fake": "fail"}}]},
        ],
    }


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    raw = raw_study(tmp / "out")
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    run_sweep(load_study(raw), workers=0, executor=fake_executor, progress=False)
    return tmp, path


def test_status_lists_every_cell_with_its_error(filled):
    _, path = filled
    res = runner.invoke(app, ["status", str(path)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "8 done, 1 failed of 9 cells" in res.output
    assert "RuntimeError: fake failure for the test" in res.output
    res = runner.invoke(app, ["status", str(path), "--errors"], env={"COLUMNS": "250"})
    assert "Traceback" in res.output


def test_frontier_table_and_figure(filled):
    tmp, path = filled
    fig = tmp / "f.png"
    res = runner.invoke(app, ["frontier", str(path), "--out", str(fig), "--eps", "0.001"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "base adamw (adamw) · arith" in res.output and "base muon (muon) · arith" in res.output
    assert "share of B's points dominated" in res.output


def test_frontier_numbers_against_brute_force_from_the_csv(filled):
    tmp, path = filled
    out = tmp / "points.csv"
    res = runner.invoke(app, ["export", str(path), "--csv", str(out)])
    assert res.exit_code == 0, res.output
    rows = [r for r in csv.DictReader(open(out)) if r["kind"] == "finetune" and r["base"] == "muon"]
    assert len(rows) == 3 * 5  # three runs on the muon base, steps 0, 2, 4, 6, 8
    cloud = {m: np.array([[float(r["forgetting"]), float(r["learning"])] for r in rows if r["method"] == m])
             for m in ("full-adamw", "lora8-adamw")}
    # Brute force: a dominates b when <= on both and < on one.
    a, b = cloud["full-adamw"], cloud["lora8-adamw"]
    want = np.mean([any((p <= q).all() and (p < q).any() for p in a) for q in b])
    with Store(tmp / "out" / "results.sqlite") as st:
        pans = {p.base: p for p in panels(st.eval_points(study="cli"))}
    got = summarize(pans["muon"], eps=0.01)["dominance"]["full-adamw"]["lora8-adamw"]
    assert got == pytest.approx(want)
    assert pans["muon"].base_point == pytest.approx((4.0, 3.0))  # the closed form at step 0


def test_export_parquet(filled):
    pytest.importorskip("pyarrow")
    tmp, path = filled
    res = runner.invoke(app, ["export", str(path), "--parquet", str(tmp / "p.parquet")])
    assert res.exit_code == 0 and "points ->" in res.output


def test_bad_study_is_refused_with_the_field_named(tmp_path):
    raw = raw_study(tmp_path / "out")
    raw["finetune"][0]["methods"][0]["optimizer"] = "adamx"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["sweep", str(path), "--workers", "0"])
    assert res.exit_code == 2
    assert "finetune[0].methods[0].optimizer: optimizer 'adamx' is unknown; allowed: adamw" in res.output
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_store_from_a_newer_forgetless_is_refused(filled, tmp_path):
    raw = raw_study(tmp_path / "out")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    Store(tmp_path / "out" / "results.sqlite").close()
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    res = runner.invoke(app, ["frontier", str(path)])
    assert res.exit_code == 2 and "schema version 99" in res.output
