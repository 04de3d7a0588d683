"""TRL's SFTTrainer with forgetless, with and without `peft_config`: the weights that should train
move, the forgetting metric is in the TensorBoard event file and the W&B offline run, and an
optimizer built before TRL's PEFT wrapping refuses instead of training nothing."""

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from test_trainer import (
    REFERENCE,
    SEQ,
    TEXTS,
    _args,
    _hf_reference_loss,
    _model,
    _tokenizer,
    _Windows,
)

import trackers_readback as rb
from forgetless.integrations import (
    ForgetlessTrainerMixin,
    ForgettingCallback,
    create_optimizer,
    optimizer_factory,
)

trl = pytest.importorskip("trl")


def _config(tmp_path, report_to, steps=4):
    return trl.SFTConfig(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=4,
                         logging_steps=1, report_to=report_to, save_strategy="no", use_cpu=True,
                         bf16=False, disable_tqdm=True, learning_rate=1e-3, max_length=32)


def _lora():
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def _callback(tok):
    return ForgettingCallback(REFERENCE, tok, every=2, seq_len=SEQ, batch_size=4)


def _check_trackers(tmp_path, expected: dict[int, float], wandb: bool) -> None:
    seen = {"tensorboard": rb.tensorboard(tmp_path / "tb")}
    if wandb:
        seen["wandb"] = rb.wandb(tmp_path)
    for tracker, got in seen.items():
        assert sorted(got["eval/forgetting_loss"]) == [0, 2, 4], tracker
        for step, value in expected.items():
            assert got["eval/forgetting_loss"][step] == pytest.approx(value, rel=1e-4), (tracker, step)
        assert sorted(got["train/loss"]) == [1, 2, 3, 4], tracker


def test_sft_full_finetune(tmp_path, monkeypatch):
    rb.local_trackers(monkeypatch, tmp_path)
    tok, model = _tokenizer(), _model("meta-llama/Llama-2-7b-hf")
    before = model.model.layers[1].self_attn.o_proj.weight.detach().clone()
    base = _hf_reference_loss(model, tok, REFERENCE)
    cb = _callback(tok)
    trainer = trl.SFTTrainer(model=model, args=_config(tmp_path, ["tensorboard", "wandb"]),
                             train_dataset=Dataset.from_dict({"text": TEXTS}), processing_class=tok,
                             optimizers=(create_optimizer(model, lr=1e-3), None))
    cb.attach(trainer)
    try:
        trainer.train()
        assert not torch.equal(model.model.layers[1].self_attn.o_proj.weight, before)
        _check_trackers(tmp_path, {0: base, 4: _hf_reference_loss(model, tok, REFERENCE)}, wandb=True)
    finally:
        rb.stop_wandb()


def test_sft_peft_config_with_optimizer_factory(tmp_path, monkeypatch):
    """TRL wraps the model in __init__; the factory builds the optimizer after, over the adapters."""
    rb.local_trackers(monkeypatch, tmp_path)
    tok, model = _tokenizer(), _model("meta-llama/Llama-2-7b-hf")
    base = _hf_reference_loss(model, tok, REFERENCE)
    frozen = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    cb = _callback(tok)
    trainer = trl.SFTTrainer(model=model, args=_config(tmp_path, ["tensorboard", "wandb"]),
                             train_dataset=Dataset.from_dict({"text": TEXTS}), processing_class=tok,
                             peft_config=_lora(), callbacks=[cb],
                             optimizer_cls_and_kwargs=optimizer_factory(lr=1e-3))
    cb.attach(trainer)
    try:
        trainer.train()
        peft_model = trainer.model
        lora_b = peft_model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
        assert lora_b.abs().sum() > 0  # PEFT initialises lora_B at 0: only training moves it
        assert torch.equal(peft_model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight,
                           frozen)
        _check_trackers(tmp_path, {0: base, 4: _hf_reference_loss(peft_model, tok, REFERENCE)},
                        wandb=True)
    finally:
        rb.stop_wandb()


def test_sft_peft_config_with_mixin(tmp_path, monkeypatch):
    rb.local_trackers(monkeypatch, tmp_path)
    tok, model = _tokenizer(), _model("moonshotai/Moonlight-16B-A3B")

    class ForgetlessSFTTrainer(ForgetlessTrainerMixin, trl.SFTTrainer):
        pass

    trainer = ForgetlessSFTTrainer(model=model, args=_config(tmp_path, ["tensorboard"]),
                                   train_dataset=Dataset.from_dict({"text": TEXTS}),
                                   processing_class=tok, peft_config=_lora(), callbacks=[_callback(tok)])
    trainer.train()
    assert "muon" in {g["rule"] for g in trainer.optimizer.param_groups}  # provenance decided
    lora_b = trainer.model.base_model.model.model.layers[1].self_attn.v_proj.lora_B["default"].weight
    assert lora_b.abs().sum() > 0
    got = rb.tensorboard(tmp_path / "tb")
    assert sorted(got["eval/forgetting_loss"]) == [0, 2, 4]


def test_sft_peft_config_with_an_optimizer_built_before_refuses(tmp_path):
    """Failure 3 as reported: create_optimizer(model) then SFTTrainer(peft_config=...)."""
    tok, model = _tokenizer(), _model("meta-llama/Llama-2-7b-hf")
    trainer = trl.SFTTrainer(model=model, args=_config(tmp_path, [], steps=2),
                             train_dataset=Dataset.from_dict({"text": TEXTS}), processing_class=tok,
                             peft_config=_lora(), optimizers=(create_optimizer(model, lr=1e-3), None))
    with pytest.raises(RuntimeError, match="built before PEFT froze the base model"):
        trainer.train()


def _readme_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("Inside an existing Hugging Face `Trainer` script", 1)[1].split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]


def test_readme_snippets_run_as_pasted(tmp_path, monkeypatch):
    """The README's Trainer and TRL + peft_config snippets, with tiny stand-ins for the names they
    say are the user's: both train, and the metric lands in TensorBoard."""
    rb.local_trackers(monkeypatch, tmp_path)
    trainer_block, trl_block = _readme_blocks()
    tok = _tokenizer()
    for i, (block, args, ds) in enumerate([
        (trainer_block, _args(tmp_path / "t", ["tensorboard"], steps=2), _Windows(tok)),
        (trl_block, _config(tmp_path / "s", ["tensorboard"], steps=2), Dataset.from_dict({"text": TEXTS})),
    ]):
        monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / f"tb{i}"))
        names = dict(model=_model("meta-llama/Llama-2-7b-hf"), tokenizer=tok, ds=ds, args=args,
                     reference_texts=REFERENCE * 2)
        exec(block, names)
        assert names["trainer"].state.global_step == 2
        assert 0 in rb.tensorboard(tmp_path / f"tb{i}")["eval/forgetting_loss"]
