"""create_optimizer and ForgettingCallback inside a real Hugging Face Trainer run."""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from forgetless.integrations import ForgettingCallback, create_optimizer, resolve_family

TEXTS = [f"def function_{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(60)]


def _tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def _model(name):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      _name_or_path=name)
    model = LlamaForCausalLM(cfg)
    model.config._name_or_path = name
    return model


def test_resolve_family_from_provenance_and_names():
    assert resolve_family(_model("meta-llama/Llama-2-7b-hf"))[0] == "adamw"
    assert resolve_family(_model("moonshotai/Moonlight-16B-A3B"))[0] == "muon"
    assert resolve_family(_model("x"), "l2->l2")[0] == "muon"
    assert resolve_family(_model("x"), "lion")[0] == "lion"
    with pytest.raises(ValueError, match="family: 'adam2'"):
        resolve_family(_model("x"), "adam2")


def test_create_optimizer_routes_hidden_matrices_to_muon():
    model = _model("moonshotai/Moonlight-16B-A3B")
    opt = create_optimizer(model, lr=1e-3)
    rules = {g["rule"] for g in opt.param_groups}
    assert "muon" in rules and "adamw" in rules
    q = model.model.layers[0].self_attn.q_proj.weight
    assert any(g["rule"] == "muon" and any(p is q for p in g["params"]) for g in opt.param_groups)


class _Windows(torch.utils.data.Dataset):
    def __init__(self, ids, seq):
        self.items = [ids[i : i + seq] for i in range(0, len(ids) - seq, seq)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        x = torch.tensor(self.items[i])
        return {"input_ids": x, "labels": x.clone()}


def test_forgetting_callback_in_a_trainer_run(tmp_path):
    tok = _tokenizer()
    model = _model("meta-llama/Llama-2-7b-hf")
    reference = [t.upper() for t in TEXTS[:30]]  # a "pretraining" sample unlike the task data
    cb = ForgettingCallback(reference, tok, every=2, seq_len=16, batch_size=4)
    # Independent reference for step 0: HF's own loss on the same windows, before training.
    ids = []
    for t in reference:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = (len(ids) - 1) // 16
    with torch.no_grad():
        windows = torch.tensor([ids[i * 16 : i * 16 + 17] for i in range(n)])
        base = float(model(input_ids=windows, labels=windows).loss)

    train_ids = []
    for t in TEXTS:
        train_ids += tok(t)["input_ids"]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                             logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, learning_rate=1e-3)
    opt = create_optimizer(model, lr=1e-3)
    trainer = Trainer(model=model, args=args, train_dataset=_Windows(train_ids, 16),
                      optimizers=(opt, None), callbacks=[cb], processing_class=tok)
    trainer.train()
    steps = [h["step"] for h in cb.history]
    assert steps == [0, 2, 4]
    assert cb.history[0]["forgetting"] == pytest.approx(base, rel=1e-5)
    assert all(math.isfinite(h["forgetting"]) for h in cb.history)
    logged = [r for r in trainer.state.log_history if "forgetting_loss" in r]
    assert [r["step"] for r in logged] == [0, 2, 4]
    assert cb.history[-1]["forgetting"] != cb.history[0]["forgetting"]  # training moved it


def test_callback_bad_inputs():
    with pytest.raises(ValueError, match="every"):
        ForgettingCallback(["x"], every=0)
    cb = ForgettingCallback(["tiny"], _tokenizer(), seq_len=64)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        cb._prepare(None)
