"""Configs: token counts, resolved defaults, YAML round trip, and errors that name field and values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from forgetless.errors import format_validation_error
from forgetless.train import FinetuneConfig, PretrainConfig, parse_count


@pytest.mark.parametrize("text, count", [("5M", 5_000_000), ("200k", 200_000), ("1.5M", 1_500_000),
                                         ("2B", 2_000_000_000), ("1000", 1000), (64, 64)])
def test_parse_count(text, count) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("bad", ["five", "-3", "0", "5X", True])
def test_parse_count_rejects(bad) -> None:
    with pytest.raises(ValueError, match="tokens"):
        parse_count(bad)


def test_pretrain_defaults_follow_the_pilot(tmp_path) -> None:
    cfg = PretrainConfig(out_dir=tmp_path, model="micro", tokens="1.5M").resolved()
    # CPU pilot (docs/pilot.md): lr 3e-3, batch 32 x seq 128, 1.5M tokens; paper A.1.1: wd 0.1, 10% warm-up, clip 1.
    assert (cfg.lr, cfg.batch_size, cfg.seq_len, cfg.weight_decay, cfg.warmup, cfg.grad_clip) == (3e-3, 32, 128, 0.1, 0.1, 1.0)
    assert cfg.steps == round(1_500_000 / (32 * 128)) and cfg.tokens == cfg.steps * 32 * 128
    assert cfg.vocab_size == 4096 and cfg.save_every == cfg.eval_every
    big = PretrainConfig(out_dir=tmp_path, model="gpt2-small").resolved()
    assert (big.seq_len, big.batch_size) == (1024, 240)


def test_finetune_defaults(tmp_path) -> None:
    small_base = {"model": "micro", "optimizer": "muon", "corpus": "stdlib", "seq_len": 128}
    full = FinetuneConfig(out_dir=tmp_path, base="b", task="arith").resolved(small_base)
    # Pilot: 300 steps, batch 32 x 128, eval every 50, lr 1e-4; paper: wd 0, dropout 0.1.
    assert (full.steps, full.batch_size, full.seq_len, full.eval_every) == (300, 32, 128, 50)
    assert (full.lr, full.weight_decay, full.dropout, full.optimizer) == (1e-4, 0.0, 0.1, "muon")
    assert full.forget_corpus == "stdlib" and full.forget_seq_len == 128
    lora = FinetuneConfig(out_dir=tmp_path, base="b", task="arith", method="lora", lora_rank=8).resolved({})
    assert lora.lora_alpha == 16.0 and lora.optimizer == "adamw" and lora.steps == 800


def test_yaml_round_trip(tmp_path) -> None:
    cfg = PretrainConfig(out_dir=tmp_path / "run", model="small", optimizer="muon", tokens="5M",
                         trackers=["tensorboard"]).resolved()
    cfg.to_yaml(tmp_path / "c.yaml")
    assert PretrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    assert PretrainConfig.from_yaml(tmp_path / "c.yaml", lr=1e-3).lr == 1e-3


@pytest.mark.parametrize("field, value, expected", [
    ("optimizer", "adam", "optimizer: optimizer 'adam' is unknown; allowed: adamw,"),
    ("model", "tiny", "model: model 'tiny' is not a preset; allowed: nano, micro, small, medium, gpt2-small"),
    ("trackers", ["neptune"], "trackers: trackers ['neptune'] are unknown; allowed: tensorboard, wandb, mlflow"),
    ("device", "tpu", "device: device 'tpu' is unknown; allowed: auto, cpu, cuda"),
    ("lr", -1.0, "lr: Input should be greater than 0"),
    ("learning_rate", 1e-3, "learning_rate: unknown field; did you mean lr?; allowed: out_dir, optimizer, lr"),
    ("wieght_decay", 0.1, "wieght_decay: unknown field; did you mean weight_decay?; allowed: out_dir,"),
])
def test_bad_pretrain_fields_are_named(tmp_path, field, value, expected) -> None:
    with pytest.raises(ValidationError) as info:
        PretrainConfig(out_dir=tmp_path, **{field: value})
    assert expected in format_validation_error(info.value, PretrainConfig)


def test_bad_finetune_method(tmp_path) -> None:
    with pytest.raises(ValidationError) as info:
        FinetuneConfig(out_dir=tmp_path, base="b", task="arith", method="qlora")
    assert "method: Input should be 'full' or 'lora' (got 'qlora')" in format_validation_error(info.value)


def test_resume_refuses_changed_training_settings_but_not_wise(tmp_path) -> None:
    """A resumed run must be the same run: a changed lr is named and refused; the WiSE weights are
    evaluated after training, so a new α list changes no training number and is accepted."""
    from forgetless.train.rundir import RunDir
    from forgetless.train.runtime import open_run

    cfg = FinetuneConfig(out_dir=tmp_path / "ft", base="b", task="arith", lr=1e-4, wise=[0.5]).resolved({})
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "config.yaml").write_text(cfg.to_yaml())
    again = cfg.model_copy(update={"resume": True})
    open_run(RunDir(tmp_path / "ft"), again.model_copy(update={"wise": [0.25, 0.5]}))
    with pytest.raises(ValueError, match=r"settings differ .*lr: 0.0001 -> 0.001"):
        open_run(RunDir(tmp_path / "ft"), again.model_copy(update={"lr": 1e-3}))
