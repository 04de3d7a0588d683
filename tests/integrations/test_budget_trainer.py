"""ForgettingBudgetCallback in a real Hugging Face Trainer run (tiny Llama, high lr, report_to
tensorboard): a first run with ForgettingCallback alone records the trajectory and a checkpoint at
every evaluation; the issue's rule, applied here by hand to those records, says where a budget is
left and which evaluation within it learned most. The run with the budget callback must stop there
and end with that checkpoint's weights, tensor for tensor."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

import trackers_readback as rb
from forgetless.integrations import ForgettingBudgetCallback, ForgettingCallback

TASK = [f"q: {i} plus {i % 5}? a: {i + i % 5}\n" for i in range(64)]
REFERENCE = {"code": [f"def held_{i}(x):\n    return x * {i}\n" for i in range(30)],
             "prose": [f"The river {i} runs under the old stone bridge.\n" for i in range(30)]}
SEQ, STEPS, EVERY = 16, 16, 2


def _tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(TASK + REFERENCE["code"] + REFERENCE["prose"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def _model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))


class _Windows(torch.utils.data.Dataset):
    def __init__(self, tok, texts):
        ids = [t for text in texts for t in tok(text)["input_ids"]]
        self.items = [ids[i:i + SEQ] for i in range(0, len(ids) - SEQ, SEQ)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        x = torch.tensor(self.items[i])
        return {"input_ids": x, "labels": x.clone()}


def _run(tmp_path, tok, callbacks, report_to):
    model = _model()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=4,
                             learning_rate=1e-2, lr_scheduler_type="constant", eval_strategy="steps",
                             eval_steps=EVERY, save_strategy="steps", save_steps=EVERY, save_only_model=True,
                             logging_steps=1, report_to=report_to, use_cpu=True, disable_tqdm=True, seed=0,
                             dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=_Windows(tok, TASK[:48]),
                      eval_dataset=_Windows(tok, TASK[48:]), processing_class=tok)
    for cb in callbacks:
        cb.attach(trainer)
    trainer.train()
    return trainer


def _points(history):
    """The eval points of a run, from its log_history: forgetting per source and eval_loss."""
    loss = {r["step"]: r["eval_loss"] for r in history if "eval_loss" in r}
    out = []
    for r in history:
        if "eval_forgetting_loss" in r and (r["step"] == 0 or r["step"] in loss):
            out.append({"step": r["step"], "learning": loss.get(r["step"]),
                        "losses": {"all": r["eval_forgetting_loss"],
                                   **{s: r[f"eval_forgetting_loss_{s}"] for s in REFERENCE}}})
    return out


def _expected(points, budget, patience):
    """(stop step or None, kept step, within flag per step) by the issue's rule."""
    base, run, kept, within = points[0]["losses"], 0, None, {}
    for p in points[1:]:
        within[p["step"]] = all(p["losses"][k] - base[k] <= budget for k in base)
        if within[p["step"]]:
            run = 0
            if kept is None or p["learning"] < kept["learning"]:
                kept = p
        else:
            run += 1
            if run == patience:
                return p["step"], kept["step"] if kept else None, within
    return None, kept["step"] if kept else None, within


def test_budget_callback_stops_and_ends_with_the_best_within(tmp_path, monkeypatch):
    rb.local_trackers(monkeypatch, tmp_path)
    tok = _tokenizer()
    first = _run(tmp_path / "a", tok, [ForgettingCallback(REFERENCE, tok, every=None, seq_len=SEQ, batch_size=4)], [])
    points = _points(first.state.log_history)
    assert [p["step"] for p in points] == list(range(0, STEPS + 1, EVERY))
    base = points[0]["losses"]
    worst = [max(p["losses"][k] - base[k] for k in base) for p in points]
    assert worst[1] < worst[2] < worst[3], worst  # forgetting rises early at this lr
    budget, patience = round((worst[2] + worst[3]) / 2, 5), 2
    stop, kept, within = _expected(points, budget, patience)
    assert stop is not None and stop < STEPS and kept is not None, (worst, stop, kept)

    cb = ForgettingBudgetCallback(budget, patience=patience)
    second = _run(tmp_path / "b", tok, [ForgettingCallback(REFERENCE, tok, every=None, seq_len=SEQ, batch_size=4), cb],
                  ["tensorboard"])
    assert second.state.global_step == stop and cb.stopped and "outside the budget" in cb.stopped
    assert cb.kept["step"] == kept
    want = load_file(str(tmp_path / "a" / "out" / f"checkpoint-{kept}" / "model.safetensors"))
    have = second.model.state_dict()
    assert all(torch.equal(have[k], want[k]) for k in want)  # the model ends as the kept step
    saved = load_file(str(tmp_path / "b" / "out" / "best-within-budget" / "model.safetensors"))
    assert saved.keys() == want.keys() and all(torch.equal(saved[k], want[k]) for k in want)
    LlamaForCausalLM.from_pretrained(tmp_path / "b" / "out" / "best-within-budget")
    # report_to: TensorBoard holds the within/outside flag of every evaluation up to the stop
    got = rb.tensorboard(tmp_path / "tb")["eval/forgetting_within_budget"]
    assert got == {s: float(w) for s, w in within.items() if s <= stop}


def test_budget_callback_bad_inputs():
    with pytest.raises(ValueError, match="forgetting_budget"):
        ForgettingBudgetCallback("abc%")
    with pytest.raises(ValueError, match="forgetting_budget"):
        ForgettingBudgetCallback(-1)
    with pytest.raises(ValueError, match="budget_patience"):
        ForgettingBudgetCallback(0.1, patience=0)
