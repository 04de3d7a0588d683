"""Multi-budget pretraining entries: one shared constant-lr trunk per seed and a decay branch per
budget (sweep.branches). Expansion is checked against hand-computed steps; a real sweep's branch
is checked against the uninterrupted WSD run of that length (the known truth), also after the
sweep is interrupted in the middle of the trunk and started again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from forgetless.models import latest_checkpoint
from forgetless.sweep.runner import run_sweep
from forgetless.sweep.store import Store
from forgetless.sweep.study import expand, load_study

SETTINGS = {"seq_len": 32, "batch_size": 8, "eval_tokens": 1024, "eval_every": 4}  # 256 tokens a step


def study(corpus: str, out: Path, tokens: list, grid_bases: list | None = None) -> dict:
    spec = {"name": "wsd", "out_dir": str(out), "data": {"corpus": corpus, "vocab_size": 512},
            "pretrain": [{"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": tokens, "decay": 0.2,
                          "seeds": [0], "settings": SETTINGS}]}
    if grid_bases is not None:
        spec["finetune"] = {"tasks": [{"name": "arith", "settings": {"train_n": 32, "eval_n": 8}}], "bases": grid_bases,
                            "steps": 4, "eval_every": 2, "settings": {"seq_len": 128, "batch_size": 2, "eval_tokens": 512},
                            "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [3e-4]}]}
    return spec


def test_expansion_shares_one_trunk(tmp_path) -> None:
    # Budgets 2560/5120/10240 tokens = 10/20/40 steps; decay 20% -> branch points 8/16/32;
    # warm-up 10% of the smallest budget's 10 steps = 1 step (worked out by hand).
    spec = study("unused", tmp_path, ["2560", "5120", "10240"], grid_bases=["adamw@5120"])
    cells = expand(load_study(spec))
    pre = [c for c in cells if c.kind == "pretrain"]
    trunks = [c for c in pre if c.meta.get("trunk")]
    branch = [c for c in pre if not c.meta.get("trunk")]
    assert [c.config["tokens"] // 256 for c in trunks] == [8, 16, 32]
    assert [c.config["tokens"] // 256 for c in branch] == [10, 20, 40]
    assert {c.config["warmup_steps"] for c in pre} == {1}
    assert [c.base_id for c in trunks] == [None, trunks[0].cell_id, trunks[1].cell_id]
    assert [c.base_id for c in branch] == [t.cell_id for t in trunks]
    assert {c.config["schedule"] for c in trunks} == {"constant"} and {c.config["schedule"] for c in branch} == {"wsd"}
    # steps trained: 32 (trunk) + 2 + 4 + 8 (branches) = 46, against 10 + 20 + 40 = 70 for cosine runs
    pieces = [trunks[0].config["tokens"]] + [b.config["tokens"] - a.config["tokens"] for a, b in zip(trunks, trunks[1:], strict=False)]
    pieces += [b.config["tokens"] - t.config["tokens"] for t, b in zip(trunks, branch, strict=True)]
    assert sum(pieces) // 256 == 46
    ft = [c for c in cells if c.kind == "finetune"]
    assert [c.base_id for c in ft] == [branch[1].cell_id]  # adamw@5120 only
    assert load_study(spec).token_ratios() == [(0, "adamw@5.12k", pytest.approx(4 * 2 * 128 / 5120))]
    # compile_steps 8: trunk pieces of 8, 8 and 16 steps and the 8-step branch compile; the 2- and
    # 4-step branches do not (no compile key in their config)
    spec["pretrain"][0]["compile_steps"] = 8
    pre = [c for c in expand(load_study(spec)) if c.kind == "pretrain"]
    assert [c.config.get("compile") for c in pre] == [True, None, True, None, True, True]


@pytest.mark.parametrize("bad, match", [(["5k", "2k"], "ascending"), (["2k", "2k"], "ascending")])
def test_bad_budgets_are_refused(tmp_path, bad, match) -> None:
    from forgetless.sweep.study import StudyError

    with pytest.raises(StudyError, match=match):
        load_study(study("unused", tmp_path, bad))


class Stop(Exception):
    pass


def test_sweep_branch_is_the_whole_wsd_run_and_resumes(small_corpus, tmp_path) -> None:
    from forgetless.train import PretrainConfig, pretrain

    spec = study(small_corpus, tmp_path / "sweep", ["2560", "5120"], grid_bases=["adamw@2560"])
    st = load_study(spec)
    # Stopped at the second trunk's last evaluation (step 16; it has a checkpoint at step 12): the
    # cell fails, the next sweep retries it from that checkpoint.
    calls = {"n": 0}
    import forgetless.sweep.execute as execute

    real = execute.train_executor

    def stopping(cell, out_dir, base_dir, on_eval):
        def watch(point):
            on_eval(point)
            if cell.meta.get("trunk") and point["step"] == 16 and calls["n"] == 0:
                calls["n"] += 1
                raise Stop
        return real(cell, out_dir, base_dir, watch)

    first = run_sweep(st, workers=0, executor=stopping, progress=False)
    assert first["failed"] == 2 and calls["n"] == 1  # the trunk, and its branch "base failed; not run"
    counts = run_sweep(st, workers=0, progress=False)
    assert counts == {"done": 5}
    with Store(tmp_path / "sweep" / "results.sqlite") as store:
        runs = {r["label"]: r for r in store.runs("wsd")}
    whole = pretrain(PretrainConfig(model="nano", corpus=small_corpus, vocab_size=512, optimizer="adamw", **SETTINGS,
                                    schedule="wsd", decay=0.2, warmup_steps=1, steps=20, progress=False,
                                    console=False, threads=1, out_dir=tmp_path / "whole"))
    a = load_file(str(whole.final_checkpoint / "model.safetensors"))
    b = load_file(str(latest_checkpoint(runs["adamw@5.12k/s0"]["out_dir"]) / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
