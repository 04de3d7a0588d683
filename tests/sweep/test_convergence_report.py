"""`forgetless reproduce` on a study whose bases come at several budgets (the convergence preset's
shape, tiny): claim 2 is decided per budget, never pooled across budgets. Checked against what the
store says on its own: each budget's bases are the branch cells of that budget, their losses are
the branches' last evaluations, and each budget's verdict equals claim 2 computed on the finetune
rows whose base is that budget's branch (selected here by the base cell's label)."""

from __future__ import annotations

import warnings

import pytest

from forgetless.report.reproduce import reproduce
from forgetless.report.tables import finetune_rows
from forgetless.report.verdicts import claim2_same_optimizer
from forgetless.sweep.store import Store

SETTINGS = {"seq_len": 32, "batch_size": 8, "eval_tokens": 1024, "eval_every": 4}  # 256 tokens a step


def _study(corpus: str, out) -> dict:
    pre = [{"name": fam, "model": "nano", "optimizer": fam, "tokens": ["2560", "5120"], "decay": 0.2,
            "seeds": [0, 1], "settings": SETTINGS} for fam in ("adamw", "muon")]
    return {"name": "conv-tiny", "out_dir": str(out), "data": {"corpus": corpus, "vocab_size": 512},
            "pretrain": pre,
            "finetune": {"tasks": [{"name": "arith", "settings": {"train_n": 32, "eval_n": 8}}],
                         "bases": ["adamw@2560", "muon@2560", "adamw@5120", "muon@5120"],
                         "steps": 4, "eval_every": 2,
                         "settings": {"seq_len": 128, "batch_size": 2, "eval_tokens": 512, "eval_early": True},
                         "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [3e-4]},
                                     {"kind": "full", "optimizer": "muon", "lrs": [3e-4]}]}}


def test_claim2_per_budget(small_corpus, tmp_path) -> None:
    import yaml

    path = tmp_path / "conv.yaml"
    path.write_text(yaml.safe_dump(_study(small_corpus, tmp_path / "sweep")))
    with warnings.catch_warnings():  # a tiny study's finetunes are far outside the paper's regime
        warnings.simplefilter("ignore")
        result = reproduce(str(path), workers=0, progress=False, log=lambda *a, **k: None)
    assert result.report_md.is_file() and (tmp_path / "sweep" / "figures" / "convergence.png").is_file()
    assert len(result.verdicts) == 2  # one claim-2 verdict per budget, none pooled
    with Store(tmp_path / "sweep" / "results.sqlite") as store:
        runs = store.runs_by_id("conv-tiny")
        rows = finetune_rows(store, "conv-tiny")
        points = store.points(study="conv-tiny")
    label = {cid: r["label"] for cid, r in runs.items()}
    text = result.report_md.read_text()
    for budget, verdict in zip(("2.56k", "5.12k"), result.verdicts, strict=True):
        mine = [r for r in rows if f"@{budget}/" in label[r["run_id"]]]
        assert len({r["run_id"] for r in mine}) == 8  # 2 families x 2 seeds x 2 finetuning optimizers
        expected = claim2_same_optimizer(mine)
        assert verdict.status == expected.status
        assert verdict.part_decisions.keys() == expected.part_decisions.keys()
        for name, d in expected.part_decisions.items():
            assert verdict.part_decisions[name].mean == pytest.approx(d.mean)
        # The bases' losses in the table are the branches' last evaluations.
        for fam in ("adamw", "muon"):
            branch = [cid for cid, lab in label.items()
                      if lab.startswith(f"{fam}@{budget}/s") and runs[cid]["kind"] == "pretrain"]
            assert len(branch) == 2
            last = [max((p for p in points if p["run_id"] == cid), key=lambda p: p["step"])["forgetting"]
                    for cid in branch]
            assert f"{sum(last) / 2:.3f}" in text
