"""A run ended by a decision says so (issue 26): pruned by `sweep --prune` or stopped by the
forgetting budget, never "failed".

Known answers: a finetune told at its step-4 evaluation that it is pruned (of 8 steps, evaluated
every 2) ends there with status "pruned", its step-4 checkpoint and the points of steps 0, 2, 4;
resumed without pruning it finishes exactly as the same finetune run straight through (bit for bit
on CPU). In a real sweep whose only finished peer dominates everything by construction, the real
finetune is pruned at the warm-up's evaluation (step 4), recorded done and marked pruned, and a
second invocation runs nothing again; its budgeted twin stops at the first evaluation whose
forgetting rose above the budget, computed here from the pruned twin's own points.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from forgetless.sweep.prune import RunPruned
from forgetless.train import FinetuneConfig, finetune

FT = dict(task="arith", steps=8, eval_every=2, batch_size=4, seq_len=96, eval_n=8, train_n=32,
          eval_tokens=512, progress=False, threads=1, lr=3e-3, log_every=1)


def _evals(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "eval"]


def _numbers(points):
    return [(p["step"], p["forgetting"], p["learning"]) for p in points]


def _stop_at(step: int):
    def on_eval(point):
        if point["step"] == step:
            raise RunPruned(f"pruned at step {step}: told so by the test")
    return on_eval


def test_a_pruned_finetune_ends_pruned_and_resumes_to_the_straight_run(base_run, tmp_path):
    straight = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "straight", **FT),
                        on_eval=_stop_at(8))  # at the last evaluation there is nothing to stop
    assert straight.status == "done" and [p["step"] for p in straight.points] == [0, 2, 4, 6, 8]
    assert "stopped" not in json.loads((tmp_path / "straight" / "status.json").read_text())

    out = tmp_path / "pruned"
    result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=out, **FT), on_eval=_stop_at(4))
    assert result.status == "pruned"
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "pruned" and status["step"] == 4 and status["steps"] == 8
    assert status["stopped"] == "pruned at step 4: told so by the test"
    assert result.final_checkpoint == out / "checkpoints" / "step-000004" and result.final_checkpoint.is_dir()
    assert status["final_checkpoint"] == str(result.final_checkpoint)
    assert _numbers(_evals(out)) == _numbers(straight.points[:3])  # steps 0, 2, 4: the same training
    trained = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
               if json.loads(line).get("kind") == "train"]
    assert max(trained) == 4  # nothing trained past the stop

    resumed = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=out, resume=True, **FT))
    assert resumed.status == "done" and json.loads((out / "status.json").read_text())["status"] == "done"
    assert _numbers(resumed.points) == _numbers(straight.points)


FAKE_LR = 1e-3  # the dominating peer: fabricated points, better than any real run in both losses


def _executor(cell, out_dir, base_dir, on_eval):
    from forgetless.sweep.execute import train_executor

    if cell.kind == "finetune" and cell.lr == FAKE_LR:
        for step in range(0, 9, 2):
            on_eval({"step": step, "tokens": 0, "forgetting": 0.5, "learning": 0.5})
        return SimpleNamespace(status="done", points=[], final_checkpoint=None)
    return train_executor(cell, out_dir, base_dir, on_eval)


@pytest.mark.filterwarnings("ignore::UserWarning")  # the tiny study is outside the paper's regime, on purpose
def test_a_sweep_records_pruned_and_budget_stops_as_what_they_are(corpus_dir, tmp_path):
    from forgetless.sweep.prune import PruneRule
    from forgetless.sweep.runner import run_sweep
    from forgetless.sweep.store import Store
    from forgetless.sweep.study import load_study

    study = load_study({
        "name": "stops", "out_dir": str(tmp_path), "data": {"corpus": str(corpus_dir), "vocab_size": 512},
        "pretrain": [{"name": "b", "model": "nano", "optimizer": "adamw", "tokens": "6k",
                      "settings": {"seq_len": 32, "batch_size": 8, "eval_tokens": 1024, "eval_every": 8}}],
        "finetune": {"tasks": [{"name": "arith", "settings": {"train_n": 32, "eval_n": 8}}], "steps": 8,
                     "eval_every": 2, "settings": {"seq_len": 128, "batch_size": 4, "eval_tokens": 512},
                     "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [FAKE_LR, 3e-3], "name": "plain"},
                                 {"kind": "full", "optimizer": "adamw", "lrs": [3e-3], "name": "budget",
                                  "settings": {"forgetting_budget": 0.001, "budget_patience": 1}}]}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        counts = run_sweep(study, workers=0, progress=False, executor=_executor, prune=PruneRule(warmup=2))
        with Store(tmp_path / "results.sqlite") as st:
            runs = {(r["method"], r["lr"]): r for r in st.runs("stops") if r["kind"] == "finetune"}
            points = {k: [p for p in st.points(run_id=r["cell_id"]) if p["step"] >= 0] for k, r in runs.items()}
        assert counts == {"done": 3, "pruned": 1}  # base, fake peer, budget; the real plain run

        pruned, twin = runs[("plain", 3e-3)], runs[("budget", 3e-3)]
        pdir, bdir = tmp_path / "cells" / pruned["cell_id"], tmp_path / "cells" / twin["cell_id"]
        assert pruned["status"] == "done" and pruned["meta"]["pruned"].startswith("pruned at step 4:")
        assert [p["step"] for p in points[("plain", 3e-3)]] == [0, 2, 4]
        assert pruned["checkpoint"].endswith("step-000004")
        status = json.loads((pdir / "status.json").read_text())
        assert status["status"] == "pruned" and status["step"] == 4 and status["stopped"] == pruned["meta"]["pruned"]

        base = points[("plain", 3e-3)][0]["forgetting"]  # the budget's answer, from the twin's own points
        first_out = next(p["step"] for p in points[("plain", 3e-3)][1:] if p["forgetting"] - base > 0.001)
        assert [p["step"] for p in points[("budget", 3e-3)]][-1] == first_out
        bstatus = json.loads((bdir / "status.json").read_text())
        assert twin["status"] == "done" and not twin["meta"].get("pruned")
        assert bstatus["status"] == "done" and bstatus["step"] == first_out
        assert "forgetting outside the budget" in bstatus["stopped"]

        # Run again (a resume): nothing is trained or marked again, nothing counts as failed.
        before = {d: (d / "status.json").stat().st_mtime_ns for d in (pdir, bdir)}
        again = run_sweep(study, workers=0, progress=False, executor=_executor, prune=PruneRule(warmup=2))
        assert again == counts
        assert {d: (d / "status.json").stat().st_mtime_ns for d in (pdir, bdir)} == before
    finally:
        torch.set_num_threads(threads)
