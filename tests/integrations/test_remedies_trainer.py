"""ReplayCollator, L2SPCallback and wise inside real Hugging Face Trainer runs on a tiny Llama:
the rows the model trained on are counted (replay windows of the replay text, never of the
forgetting reference), one SGD step with the callback moves the weights by exactly −lr·coef·(θ − θ₀)
more than without it, and WiSE's ends are the two models bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    DataCollatorForLanguageModeling,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from forgetless.integrations import L2SPCallback, ReplayCollator, wise

TASK = [f"q: {i} plus {i % 5}? a: {i + i % 5}" for i in range(64)]
REPLAY = [f"def replay_{i}(x):\n    return x * {i}\n" for i in range(40)]      # pretraining-like, trained on
REFERENCE = [f"class Held{i}:\n    value = {i * 7}\n" for i in range(40)]   # measures forgetting: never replayed


def _tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(TASK + REPLAY + REFERENCE, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def _model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=12, learning_rate=1e-3,
                report_to="none", use_cpu=True, save_strategy="no", logging_steps=100, seed=0,
                dataloader_num_workers=0, lr_scheduler_type="constant", warmup_steps=0)
    return TrainingArguments(**{**base, **kw})


def _stream(tok, texts) -> list[int]:
    return [t for text in texts for t in tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]


def _inside(row: list[int], stream: list[int]) -> bool:
    n = len(row)
    return any(stream[i:i + n] == row for i in range(len(stream) - n + 1))


@pytest.mark.parametrize("fraction", [0.25, 0.1])
def test_replay_collator_in_a_trainer(tmp_path, fraction):
    tok = _tokenizer()
    ds = [{"input_ids": tok(t)["input_ids"]} for t in TASK]
    collator = ReplayCollator(DataCollatorForLanguageModeling(tok, mlm=False), REPLAY, tok, fraction=fraction)
    seen = []

    def recording(features):
        batch = collator(features)
        seen.append({k: v.clone() for k, v in batch.items()})
        return batch

    trainer = Trainer(model=_model(), args=_args(tmp_path), train_dataset=ds, data_collator=recording)
    out = trainer.train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    assert len(seen) >= 12  # the Trainer's loader may collate one batch ahead of the last step
    replay_ids, reference_ids = _stream(tok, REPLAY), _stream(tok, REFERENCE)
    task_rows = {tuple(tok(t)["input_ids"]) for t in TASK}
    pct = round(fraction * 100)
    total = 0
    for j, batch in enumerate(seen):
        want = (j + 1) * 4 * pct // 100 - j * 4 * pct // 100  # integer reference of ⌊J·r·B⌋ per batch
        rows = batch["input_ids"].tolist()
        masks = batch["attention_mask"].tolist()
        is_task = [tuple(r[:sum(m)]) in task_rows for r, m in zip(rows, masks, strict=True)]
        assert is_task == [True] * (4 - want) + [False] * want
        for r, m, lab in zip(rows[4 - want:], masks[4 - want:], batch["labels"].tolist()[4 - want:], strict=True):
            assert all(m) and lab == r  # every position a target
            assert _inside(r, replay_ids) and not _inside(r, reference_ids)
        total += want
    assert collator.sequences == total == len(seen) * 4 * pct // 100


def test_l2sp_callback_moves_one_sgd_step_by_the_closed_form(tmp_path):
    tok = _tokenizer()
    ds = [{"input_ids": tok(t)["input_ids"]} for t in TASK]
    start = _model()
    torch.manual_seed(5)
    anchor = {n: p.detach() + 0.05 * torch.randn_like(p) for n, p in start.named_parameters()}
    lr, coef = 0.1, 0.5

    def one_step(callbacks):
        model = copy.deepcopy(start)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        Trainer(model=model, args=_args(tmp_path, max_steps=1, learning_rate=lr, max_grad_norm=0.0),
                train_dataset=ds, data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                optimizers=(opt, None), callbacks=callbacks).train()
        return dict(model.named_parameters())

    plain, pulled = one_step([]), one_step([L2SPCallback(coef, anchor=anchor)])
    for n, p0 in start.named_parameters():
        want = -lr * coef * (p0.detach().double() - anchor[n].double())
        torch.testing.assert_close((pulled[n].detach().double() - plain[n].detach().double()), want,
                                   rtol=1e-4, atol=1e-6)


def test_wise_on_models_is_exact_at_the_ends():
    base = _model()
    ft = copy.deepcopy(base)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randint(0, 300, (2, 9))
    at0, at1, half = wise(base, ft, 0.0), wise(base.state_dict(), ft, 1.0), wise(base, ft, 0.5)
    with torch.no_grad():
        assert torch.equal(at0(x).logits, base(x).logits)
        assert torch.equal(at1(x).logits, ft(x).logits)
    for (n, b), f, h in zip(base.state_dict().items(), ft.state_dict().values(), half.state_dict().values(), strict=True):
        assert torch.equal(h, ((b.double() + f.double()) / 2).to(b.dtype)), n
    assert at0 is not ft and at0 is not base  # new models; the inputs are left as they were
