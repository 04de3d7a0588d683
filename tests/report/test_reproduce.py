"""`reproduce` end to end on a test-size study: sweep, probes, memorisation, verdicts, report."""

from __future__ import annotations

import json
import re
import shutil
import sysconfig
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from forgetless.cli import app
from forgetless.report.reproduce import reproduce
from forgetless.sweep.store import Store

MEMORIZATION = {"optimizers": ["adamw", "muon", "sgd"], "lrs": [3e-3], "preset": "nano",
                "vocab_size": 512, "n_tokens": 2048, "block_len": 16, "pairs": [[4, 4]],
                "steps": 12, "eval_every": 6, "n_eval": 8, "batch_size": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = tmp_path_factory.mktemp("corpus")
    for pkg in ("json", "email", "logging"):
        for f in sorted((stdlib / pkg).glob("*.py")):
            if f.stat().st_size > 200:
                shutil.copy(f, out / f"{pkg}_{f.name}")
    return str(out)


def study_file(tmp_path: Path, corpus: str) -> Path:
    pre = {"seq_len": 32, "batch_size": 8, "eval_tokens": 512, "eval_every": 8}
    ft = {"seq_len": 128, "batch_size": 4, "eval_tokens": 512}
    study = {
        "name": "tiny-reproduce", "out_dir": str(tmp_path / "out"),
        "data": {"corpus": corpus, "vocab_size": 512},
        "pretrain": [{"name": o, "model": "nano", "optimizer": o, "tokens": "4k", "settings": pre}
                     for o in ("adamw", "muon")],
        "finetune": [
            {"tasks": [{"name": "arith", "settings": {"train_n": 16, "eval_n": 8}}],
             "steps": 4, "eval_every": 2, "settings": ft,
             "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [3e-4]},
                         {"kind": "full", "optimizer": "muon", "lrs": [3e-4]}]},
            {"tasks": [{"name": "arith", "settings": {"train_n": 16, "eval_n": 8}}], "bases": ["adamw"],
             "steps": 4, "eval_every": 2, "settings": ft,
             "methods": [{"kind": "lora", "lora_rank": 2, "optimizer": "adamw", "lrs": [1e-3]},
                         {"kind": "lora", "lora_rank": 4, "optimizer": "adamw", "lrs": [1e-3]}]},
        ],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_reproduce_end_to_end(tmp_path, corpus):
    path = study_file(tmp_path, corpus)
    memorization = dict(MEMORIZATION, corpus=corpus)  # a small corpus: nothing else to tokenise
    result = reproduce(str(path), workers=0, memorization=memorization, probe_tokens=256,
                       progress=False, log=lambda _m: None)
    assert [v.claim for v in result.verdicts] == list(range(1, 8))
    # Every claim but 6 has what it needs in this study (claim 6 needs an instruction task, and
    # says so); one pretraining seed is never decisive.
    by_claim = {v.claim: v for v in result.verdicts}
    for claim in (1, 2, 3, 4, 7):
        assert by_claim[claim].status == "inconclusive", by_claim[claim]
    assert by_claim[6].status == "not measured" and "instruction task" in by_claim[6].ours
    # The report's numbers come from the store: the pretraining validation losses it prints are
    # the last eval points of the pretraining runs.
    with Store(result.out_dir / "results.sqlite") as store:
        runs = {r["cell_id"]: r for r in store.runs("tiny-reproduce")}
        last = {}
        for p in store.points(study="tiny-reproduce"):
            if runs[p["run_id"]]["kind"] == "pretrain":
                last[runs[p["run_id"]]["label"]] = p["forgetting"]
    md = result.report_md.read_text()
    for label, loss in last.items():
        assert re.search(rf"\| {label} \| {label} \| 0 \| {loss:.3f} \|", md), (label, loss)
    html = result.report_html.read_text()
    assert html.count("data:image/png;base64,") >= 4  # frontiers, lr colours, activations, memorisation
    saved = json.loads((result.out_dir / "verdicts.json").read_text())
    assert [v["status"] for v in saved["verdicts"]] == [v.status for v in result.verdicts]
    assert "ratios" in saved["regime"] and "unbracketed" in saved["regime"]

    # A second run does no training: no cell starts again (the store's start and finish times are
    # unchanged), the memorisation test and the probes come from their caches, and the verdicts
    # are identical.
    with Store(result.out_dir / "results.sqlite") as store:
        before = {r["cell_id"]: (r["started_at"], r["finished_at"]) for r in store.runs("tiny-reproduce")}
    cached = sorted((result.out_dir / "probes").glob("*.json")) + [result.out_dir / "memorization" / "results.json"]
    stamps = {f: f.stat().st_mtime_ns for f in cached}
    lines: list[str] = []
    again = reproduce(str(path), workers=0, memorization=memorization, probe_tokens=256,
                      progress=False, log=lines.append)
    with Store(result.out_dir / "results.sqlite") as store:
        after = {r["cell_id"]: (r["started_at"], r["finished_at"]) for r in store.runs("tiny-reproduce")}
    assert after == before and len(before) == 8  # 2 pretraining + 6 finetuning cells
    assert {f: f.stat().st_mtime_ns for f in cached} == stamps
    assert any("memorisation test, seed 0: cached" in line for line in lines), lines
    assert [v.status for v in again.verdicts] == [v.status for v in result.verdicts]
    assert [v.ours for v in again.verdicts] == [v.ours for v in result.verdicts]


def test_cli_refuses_unknown_preset():
    result = CliRunner().invoke(app, ["reproduce", "--preset", "nope"])
    assert result.exit_code == 2 and "quick" in result.output
