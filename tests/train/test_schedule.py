"""Warm-up / stable / decay pretraining: the schedule's formula, decay branches that continue a
constant-lr trunk exactly, a branch that lands where a cosine run of the same length does, and
dense early evaluation of finetunes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from forgetless.errors import UserError
from forgetless.train import FinetuneConfig, PretrainConfig, finetune, pretrain
from forgetless.train.loop import lr_factor


def _lrs(kind: str, steps: int, warm: int, decay: float, min_ratio: float = 0.1) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(kind, steps, warm, min_ratio, decay))
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_wsd_schedule_matches_formula() -> None:
    # 20 steps, warm-up 2, decay 0.25: the last 5 steps (15..19) go linearly from 2.0 towards 0.2,
    # reaching 0.2 on the last step; written out by hand.
    expected = [1.0, 2.0] + [2.0] * 13 + [2.0 - 1.8 * j / 5 for j in range(1, 6)]
    assert _lrs("wsd", 20, 2, 0.25) == pytest.approx(expected, rel=1e-12)
    assert _lrs("constant", 20, 2, 0.25) == pytest.approx([1.0] + [2.0] * 19, rel=1e-12)


def _weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.final_checkpoint / "model.safetensors"))


class Killed(Exception):
    pass


def test_branch_from_trunk_repeats_the_whole_wsd_run(corpus_dir, tmp_path, tiny) -> None:
    """A constant-lr trunk to step 7, then a decay branch to step 10, is the uninterrupted WSD run
    of 10 steps bit for bit (weights and eval points), also when the branch is killed and resumed."""
    common = dict(**tiny, corpus=str(corpus_dir), optimizer="muon", dropout=0.1, grad_accum=2, warmup_steps=2,
                  eval_every=2, save_every=2)
    whole = pretrain(PretrainConfig(**common, schedule="wsd", decay=0.3, steps=10, out_dir=tmp_path / "whole"))
    trunk = pretrain(PretrainConfig(**common, schedule="constant", steps=7, out_dir=tmp_path / "trunk"))
    assert trunk.final_checkpoint.name == "step-000007"
    branch = pretrain(PretrainConfig(**common, schedule="wsd", decay=0.3, steps=10, out_dir=tmp_path / "branch",
                                     start_from=str(tmp_path / "trunk")))
    a, b = _weights(whole), _weights(branch)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drop = ("wall_time", "forgetting_delta")  # a branch has no step-0 point to measure a delta from
    tail = [{k: v for k, v in p.items() if k not in drop} for p in whole.points if p["step"] > 7]
    assert [{k: v for k, v in p.items() if k not in drop} for p in branch.points] == tail
    assert [p["step"] for p in branch.points] == [8, 10]

    def kill_at_10(point):
        if point["step"] == 10:
            raise Killed

    cut = dict(**common, schedule="wsd", decay=0.3, steps=10, out_dir=tmp_path / "cut", start_from=str(tmp_path / "trunk"))
    with pytest.raises(Killed):  # checkpoint at step 8 written, then killed at the last evaluation
        pretrain(PretrainConfig(**cut), on_eval=kill_at_10)
    resumed = pretrain(PretrainConfig(**cut, resume=True))
    c = _weights(resumed)
    for key in a:
        assert torch.equal(a[key], c[key]), key
    with pytest.raises(UserError, match="lr"):  # a branch must continue its own trunk's run
        pretrain(PretrainConfig(**{**common, "lr": 1e-2}, schedule="wsd", decay=0.3, steps=10,
                                out_dir=tmp_path / "other", start_from=str(tmp_path / "trunk")))


def test_decayed_branch_reaches_the_cosine_runs_loss(corpus_dir, tmp_path, tiny) -> None:
    """The known truth: a cosine run of the same length. A 20% decay branch off a constant-lr
    trunk ends within noise of it (two cosine seeds measure the noise), and well below the
    trunk at the branch point (the decay is what finishes the base)."""
    common = dict(**tiny, corpus=str(corpus_dir), optimizer="adamw", eval_every=150, warmup_steps=15)
    cos = [pretrain(PretrainConfig(**common, seed=s, steps=150, out_dir=tmp_path / f"cos{s}")).points[-1]["val_loss"]
           for s in (0, 1)]
    trunk = pretrain(PretrainConfig(**common, schedule="constant", steps=120, out_dir=tmp_path / "trunk"))
    wsd = pretrain(PretrainConfig(**common, schedule="wsd", decay=0.2, steps=150, out_dir=tmp_path / "branch",
                                  start_from=str(tmp_path / "trunk"))).points[-1]["val_loss"]
    noise = max(abs(cos[0] - cos[1]), 0.02)
    assert abs(wsd - cos[0]) <= 3 * noise, (wsd, cos)
    assert trunk.points[-1]["val_loss"] > wsd + 0.02, (trunk.points[-1]["val_loss"], wsd)


def test_eval_early_adds_powers_of_two(base_run, tmp_path) -> None:
    common = dict(base=str(base_run.out_dir), task="arith", steps=12, eval_every=10, batch_size=4, seq_len=64,
                  eval_n=8, eval_tokens=512, progress=False, console=False, threads=1)
    plain = finetune(FinetuneConfig(**common, out_dir=tmp_path / "plain"))
    early = finetune(FinetuneConfig(**common, eval_early=True, out_dir=tmp_path / "early"))
    assert [p["step"] for p in plain.points] == [0, 10, 12]
    assert [p["step"] for p in early.points] == [0, 1, 2, 4, 8, 10, 12]
    # the extra evaluations change nothing else: the shared points are equal
    same = {p["step"]: p["learning"] for p in early.points}
    assert [same[p["step"]] for p in plain.points] == [p["learning"] for p in plain.points]
