"""pretrain: loss falls for every optimizer, resume is bit-exact, checkpoints load with plain transformers,
divergence stops cleanly."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from forgetless.data import prepare_pretraining_data, sample_batch
from forgetless.optim import OPTIMIZERS
from forgetless.train import PretrainConfig, pretrain
from forgetless.train import loop as loop_module
from forgetless.train.evaluate import EVAL_SEED


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_loss_falls_for_each_optimizer(corpus_dir, tmp_path, tiny, optimizer) -> None:
    cfg = PretrainConfig(**tiny, corpus=str(corpus_dir), optimizer=optimizer, steps=12, eval_every=12,
                         out_dir=tmp_path / optimizer)
    result = pretrain(cfg)
    assert result.status == "done"
    first, last = result.points[0]["val_loss"], result.points[-1]["val_loss"]
    assert last < first - 0.5, (optimizer, first, last)  # from ~ln(512) = 6.2


def _hf_val_loss(checkpoint, corpus_dir, vocab_size: int, seq_len: int, n_tokens: int) -> float:
    """Validation loss the plain Hugging Face way: AutoModelForCausalLM, labels=input_ids."""
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    val = prepare_pretraining_data(str(corpus_dir), vocab_size=vocab_size, progress=False).val
    n_windows = -(-n_tokens // seq_len)
    x, y = sample_batch(val, n_windows, seq_len, EVAL_SEED, 0)
    seq = torch.cat([x, y[:, -1:]], dim=1)  # T+1 tokens: HF shifts labels itself
    with torch.no_grad():
        losses = [model(input_ids=s[None], labels=s[None]).loss for s in seq]
    return float(torch.stack(losses).mean())  # every window has seq_len targets: equal weights


def test_checkpoint_loads_with_plain_transformers(base_run, corpus_dir, tiny) -> None:
    assert base_run.status == "done" and base_run.final_checkpoint.name == "step-000040"
    assert [p["step"] for p in base_run.points] == [0, 20, 40]
    ckpt = base_run.final_checkpoint
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "trainer_state.safetensors", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    hf = _hf_val_loss(ckpt, corpus_dir, tiny["vocab_size"], tiny["seq_len"], tiny["eval_tokens"])
    assert hf == pytest.approx(base_run.points[-1]["forgetting"], abs=1e-5)
    saved = json.loads((base_run.out_dir / "status.json").read_text())
    assert saved["status"] == "done"
    assert PretrainConfig.from_yaml(base_run.out_dir / "config.yaml").steps == 40


class Killed(Exception):
    """Stands in for SIGKILL: raised from on_eval, the run stops wherever it is."""


def test_resume_after_kill_is_bit_identical(corpus_dir, tmp_path, tiny) -> None:
    common = dict(**tiny, corpus=str(corpus_dir), optimizer="muon", steps=8, eval_every=2, save_every=4,
                  dropout=0.1, grad_accum=2)
    whole = pretrain(PretrainConfig(**common, out_dir=tmp_path / "whole"))

    def kill_at_6(point):
        if point["step"] == 6:
            raise Killed

    with pytest.raises(Killed):  # checkpoint at step 4 written, step 6 measured, then killed
        pretrain(PretrainConfig(**common, out_dir=tmp_path / "cut"), on_eval=kill_at_6)
    with pytest.raises(FileExistsError, match="resume"):
        pretrain(PretrainConfig(**common, out_dir=tmp_path / "cut"))
    resumed = pretrain(PretrainConfig(**common, out_dir=tmp_path / "cut", resume=True))
    a = load_file(str(whole.final_checkpoint / "model.safetensors"))
    b = load_file(str(resumed.final_checkpoint / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drop = ("wall_time",)
    assert [{k: v for k, v in p.items() if k not in drop} for p in resumed.points] == \
           [{k: v for k, v in p.items() if k not in drop} for p in whole.points]
    with pytest.raises(ValueError, match="lr"):  # a resumed run must keep its settings
        pretrain(PretrainConfig(**{**common, "out_dir": tmp_path / "cut", "resume": True, "lr": 1e-2}))


@pytest.mark.parametrize("bad", [float("nan"), 1e6])
def test_divergence_keeps_last_good_checkpoint(corpus_dir, tmp_path, tiny, monkeypatch, bad) -> None:
    real = loop_module.chunked_train_loss_sum
    calls = {"n": 0}

    def poisoned(model, x, y):  # from the 6th training step on, the loss is NaN (or huge)
        calls["n"] += 1
        loss, n = real(model, x, y)
        return (loss * bad if calls["n"] >= 6 else loss), n

    monkeypatch.setattr(loop_module, "chunked_train_loss_sum", poisoned)  # the loss of one-process runs
    result = pretrain(PretrainConfig(**tiny, corpus=str(corpus_dir), steps=10, eval_every=2, out_dir=tmp_path / "d"))
    assert result.status == "diverged"
    assert result.final_checkpoint.name == "step-000004"
    status = json.loads((tmp_path / "d" / "status.json").read_text())
    assert status["status"] == "diverged" and status["step"] == 6
    assert status["final_checkpoint"].endswith("step-000004")
    lines = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "status" and lines[-1]["status"] == "diverged"
