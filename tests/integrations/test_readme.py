"""The README's practitioner Python blocks, run as pasted on a tiny Llama: the objects the README
calls "yours" (model, tokenizer, ds, args, reference_texts) come from the test, the block's text
from README.md itself, so a README edit that breaks a snippet fails here. The same blocks on a
135M-parameter model: benchmarks/readme_135m.py."""

import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from test_trainer import REFERENCE, TEXTS, _model, _tokenizer, _Windows
from transformers import TrainingArguments

import trackers_readback as rb

README = Path(__file__).resolve().parents[2] / "README.md"
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def _blocks() -> list[str]:
    section = README.read_text().split("## For practitioners", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _yours(tmp_path, sft: bool) -> dict:
    tok = _tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    common = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                  logging_steps=1, report_to=["tensorboard"], save_strategy="no", use_cpu=True,
                  disable_tqdm=True)
    if sft:
        trl = pytest.importorskip("trl")
        chats = [{"messages": [{"role": "user", "content": t[:20]}, {"role": "assistant", "content": t}]}
                 for t in TEXTS]
        return {"model": _model("acme/chat-base"), "tokenizer": tok, "ds": Dataset.from_list(chats),
                "args": trl.SFTConfig(max_length=32, **common), "reference_texts": REFERENCE}
    return {"model": _model("acme/chat-base"), "tokenizer": tok, "ds": _Windows(tok),
            "args": TrainingArguments(**common), "reference_texts": REFERENCE}


def test_the_readme_has_the_two_trainer_blocks():
    blocks = _blocks()
    assert len(blocks) == 2 and "Trainer(" in blocks[0] and "SFTTrainer" in blocks[1]


@pytest.mark.parametrize("which", [0, 1], ids=["trainer", "sft-peft"])
def test_readme_block_runs_as_pasted(tmp_path, monkeypatch, which):
    rb.local_trackers(monkeypatch, tmp_path)  # TensorBoard under tmp_path / "tb"
    namespace = _yours(tmp_path, sft=which == 1)
    weights = {n: p.detach().clone() for n, p in namespace["model"].named_parameters()}
    exec(compile(_blocks()[which], f"README.md block {which}", "exec"), namespace)  # noqa: S102
    trainer = namespace["trainer"]
    logged = [r["step"] for r in trainer.state.log_history if "eval_forgetting_loss" in r]
    assert logged == [0]  # every=50 in a 2-step run: the base model's loss
    assert 0 in rb.tensorboard(tmp_path / "tb")["eval/forgetting_loss"]  # reached the tracker
    moved = [n for n, p in trainer.model.named_parameters()
             if p.requires_grad and n.replace("base_model.model.", "").replace(".base_layer", "") in weights
             and not torch.equal(p, weights[n.replace("base_model.model.", "").replace(".base_layer", "")])]
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    if which == 1:  # LoRA: the adapters trained, the base weights did not
        assert lora_b and all(p.abs().sum() > 0 for p in lora_b) and not moved
    else:
        assert moved and not lora_b
