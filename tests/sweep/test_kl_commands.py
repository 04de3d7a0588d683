"""kl_to_base through a sweep and the command line (issue 25 §3): recorded in the store by its
name, drawn by `forgetless frontier --x kl_to_base`, compared by `forgetless compare --x kl_to_base`.

The stand-in executor's points follow a closed form (tests/sweep/_fake_train.py); each point also
reports KL = 0.5·(forgetting − 4) for full finetunes and 2·(forgetting − 4) for LoRA, so on the KL
axis a LoRA point moves 4× as far as a full one that forgets as much.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from _fake_train import fake_executor
from test_sweep_commands import raw_study
from typer.testing import CliRunner

from forgetless.analysis.frontier import panels, summarize
from forgetless.cli import app
from forgetless.sweep.runner import run_sweep
from forgetless.sweep.store import Store
from forgetless.sweep.study import load_study

runner = CliRunner()


def kl_executor(cell, out_dir, base_dir, on_eval):
    scale = 2.0 if cell.config.get("method") == "lora" else 0.5

    def with_kl(point):
        if cell.kind == "finetune":
            point["kl_to_base"] = scale * (point["forgetting"] - 4.0)
        on_eval(point)

    return fake_executor(cell, out_dir, base_dir, with_kl)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kl")
    raw = raw_study(tmp / "out")
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    run_sweep(load_study(raw), workers=0, executor=kl_executor, progress=False)
    return tmp, path


def test_the_store_records_kl_and_the_frontier_draws_it(filled):
    tmp, path = filled
    with Store(tmp / "out" / "results.sqlite") as st:
        pts = st.eval_points(study="cli")
    ft = [p for p in pts if p.kind == "finetune"]
    assert ft and all(p.value("kl_to_base") == pytest.approx((0.5 if p.method.startswith("full") else 2.0)
                                                            * (p.forgetting - 4.0)) for p in ft)
    pans = {p.base: p for p in panels(pts, x="kl_to_base")}
    full, lora = pans["muon"].methods["full-adamw"].points, pans["muon"].methods["lora8-adamw"].points
    want = np.mean([any((p <= q).all() and (p < q).any() for p in full) for q in lora])  # brute force
    assert summarize(pans["muon"], eps=0.01).dominance["full-adamw"]["lora8-adamw"] == pytest.approx(want)
    assert pans["muon"].base_point == pytest.approx((0.0, 3.0))
    fig = tmp / "kl.png"
    res = runner.invoke(app, ["frontier", str(path), "--x", "kl_to_base", "--out", str(fig)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "base model: KL(base ‖ model) 0.0000, task loss 3.0000" in res.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_and_frontier_refuse_an_undeclared_axis_and_compare_on_kl(filled):
    tmp, path = filled
    res = runner.invoke(app, ["frontier", str(path), "--x", "kl"])
    assert res.exit_code == 2 and "kl_to_base" in res.output  # the allowed names, the nearest one
    res = runner.invoke(app, ["compare", str(tmp / "out"), "--x", "kl_to_base", "--out", str(tmp / "cmp")])
    assert res.exit_code == 0, res.output
    md = (tmp / "cmp" / "compare.md").read_text()
    assert "Base model: KL(base ‖ model) 0.000, task loss 3.000" in md
    assert "with KL(base ‖ model) within Δ nats of the base" in md


def test_export_has_a_column_per_declared_metric(filled):
    import csv

    tmp, path = filled
    out = tmp / "points.csv"
    assert runner.invoke(app, ["export", str(path), "--csv", str(out)]).exit_code == 0
    rows = [r for r in csv.DictReader(open(out)) if r["kind"] == "finetune"]
    for r in rows:
        scale = 0.5 if r["method"].startswith("full") else 2.0
        assert float(r["kl_to_base"]) == pytest.approx(scale * (float(r["forgetting"]) - 4.0))
    assert {r["forgetting_se"] for r in rows} == {"nan"}  # declared, not measured by the stand-in
