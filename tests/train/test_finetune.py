"""finetune: step-0 forgetting equals the base's validation loss computed independently; full and LoRA
runs learn; LoRA's merged checkpoint loads with plain transformers and reproduces the adapter's numbers."""

from __future__ import annotations

import pytest
import torch
import transformers
from safetensors.torch import load_file

from forgetless.data import (
    SFTCollator,
    check_answer,
    load_task,
    prepare_pretraining_data,
    sample_batch,
)
from forgetless.train import FinetuneConfig, finetune
from forgetless.train.evaluate import EVAL_SEED

FT = dict(task="arith", steps=8, eval_every=4, batch_size=8, seq_len=96, eval_n=16, train_n=64,
          eval_tokens=1024, progress=False, threads=1)


def _forgetting_by_hand(checkpoint, corpus_dir, tiny) -> float:
    """Base validation loss with a plain HF forward (labels=input_ids) on the same held-out windows."""
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    val = prepare_pretraining_data(str(corpus_dir), vocab_size=tiny["vocab_size"], progress=False).val
    x, y = sample_batch(val, tiny["eval_tokens"] // tiny["seq_len"], tiny["seq_len"], EVAL_SEED, 0)
    seq = torch.cat([x, y[:, -1:]], dim=1)
    with torch.no_grad():
        return float(torch.stack([model(input_ids=s[None], labels=s[None]).loss for s in seq]).mean())


def _learning_by_hand(checkpoint, n: int) -> float:
    """Response-token loss of the held-out task records, HF labels (which are -100 off the response)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    batch = SFTCollator(tok, FT["seq_len"])(load_task("arith", "validation", n=n, seed=0))
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
            k = int((labels[1:] != -100).sum())  # HF averages over the k shifted response labels
            total += float(model(input_ids=ids[None], labels=labels[None]).loss) * k
            count += k
    return total / count


def _accuracy_by_hand(checkpoint, n: int, max_new_tokens: int) -> float:
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    records = [r for r in load_task("arith", "validation", n=FT["eval_n"], seed=0) if r.answer is not None][:n]
    right = 0
    with torch.no_grad():
        for record in records:
            row = SFTCollator(tok, FT["seq_len"])([record])
            labels = row["labels"][0].tolist()
            ids = row["input_ids"][0, : next(i for i, t in enumerate(labels) if t != -100)].tolist()
            new: list[int] = []
            for _ in range(max_new_tokens):
                token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                if token == tok.eos_token_id:
                    break
                new.append(token)
            right += check_answer("arith", record, tok.decode(new, skip_special_tokens=True))
    return right / len(records)


def test_full_finetune_step0_is_the_base(base_run, corpus_dir, tmp_path, tiny) -> None:
    result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", lr=1e-3, **FT))
    assert result.status == "done"
    points = result.points
    assert [p["step"] for p in points] == [0, 4, 8]
    base_ckpt = base_run.final_checkpoint
    assert points[0]["forgetting"] == pytest.approx(_forgetting_by_hand(base_ckpt, corpus_dir, tiny), abs=1e-5)
    assert points[0]["learning"] == pytest.approx(_learning_by_hand(base_ckpt, FT["eval_n"]), abs=1e-5)
    assert points[-1]["learning"] < points[0]["learning"] - 0.2  # it learned the task
    # The finetune's own checkpoint gives the recorded numbers through plain transformers.
    assert points[-1]["learning"] == pytest.approx(_learning_by_hand(result.final_checkpoint, FT["eval_n"]), abs=1e-5)
    # Settings the base determined: its optimizer, corpus and context length.
    saved = FinetuneConfig.from_yaml(tmp_path / "ft" / "config.yaml")
    assert (saved.optimizer, saved.forget_corpus, saved.forget_seq_len) == ("adamw", str(corpus_dir), tiny["seq_len"])


def test_lora_finetune_merged_checkpoint(base_run, tmp_path) -> None:
    result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "lora", method="lora",
                                     lora_rank=4, optimizer="muon", lr=3e-3, accuracy=True, accuracy_n=4,
                                     max_new_tokens=8, **FT))
    assert result.status == "done"
    first, last = result.points[0], result.points[-1]
    assert first["accuracy"] is not None
    assert last["learning"] < first["learning"]
    ckpt = result.final_checkpoint
    # Accuracy against a brute-force count: each of the first 4 held-out answers generated alone
    # from the merged checkpoint by a plain argmax loop (no batching, padding or KV cache), checked
    # with the task's own rule.
    assert last["accuracy"] == _accuracy_by_hand(ckpt, 4, 8)
    base = load_file(str(base_run.final_checkpoint / "model.safetensors"))
    merged = load_file(str(ckpt / "model.safetensors"))
    adapter = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only LoRA targets moved
    assert "model.embed_tokens.weight" not in changed
    # The merged model, loaded plainly, gives the learning loss the adapter model recorded.
    assert last["learning"] == pytest.approx(_learning_by_hand(ckpt, FT["eval_n"]), abs=1e-4)


def test_finetune_resume_is_bit_identical(base_run, tmp_path) -> None:
    cfg = dict(base=str(base_run.out_dir), method="lora", lora_rank=2, save_every=2, **{**FT, "eval_every": 2})
    whole = finetune(FinetuneConfig(**cfg, out_dir=tmp_path / "a"))

    class Killed(Exception):
        pass

    def kill(point):
        if point["step"] == 6:
            raise Killed

    with pytest.raises(Killed):  # killed after measuring step 6, before its checkpoint: resumes at 4
        finetune(FinetuneConfig(**cfg, out_dir=tmp_path / "b"), on_eval=kill)
    resumed = finetune(FinetuneConfig(**cfg, out_dir=tmp_path / "b", resume=True))
    strip = [{k: v for k, v in p.items() if k != "wall_time"} for p in whole.points]
    assert [{k: v for k, v in p.items() if k != "wall_time"} for p in resumed.points] == strip
    a = load_file(str(tmp_path / "a/checkpoints/step-000008/adapter/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/step-000008/adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _folder(root, code: bool):
    """Text files of distinct words (source "text") and, when `code`, Python files (source "code")."""
    import random

    rng = random.Random(3)
    words = "river stone lantern meadow whisper copper orchard harbor velvet thunder".split()
    root.mkdir()
    texts = []
    for i in range(60):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(8)) + "\n"
        (root / f"t{i:02d}.txt").write_text(text)
        texts.append(text)
        if code:
            src = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n\n" for j in range(12))
            (root / f"c{i:02d}.py").write_text(src)
            texts.append(src)
    return texts


def _resolved(base: str, tmp_path, **kw) -> FinetuneConfig:
    from forgetless.train.finetune import describe_base

    return FinetuneConfig(base=base, out_dir=tmp_path / "x", **{**FT, "eval_tokens": 512, **kw}).resolved(describe_base(base))


def test_forget_corpus_is_read_in_the_models_tokens(base_run, tmp_path) -> None:
    """--forget-corpus FILE on a forgetless base: the reference's ids decode, with the model's own
    tokenizer, to the reference's text (a BPE trained on that text would give other ids)."""
    from forgetless.models import load_model
    from forgetless.train.finetune import forgetting_reference

    texts = _folder(tmp_path / "ref", code=False)
    cfg = _resolved(str(base_run.out_dir), tmp_path, forget_corpus=str(tmp_path / "ref"))
    model, tok = load_model(base_run.final_checkpoint)
    _, batches, _, about = forgetting_reference(cfg, tok, model.get_input_embeddings().num_embeddings)
    whole = "".join(texts)
    for x, _ in batches:
        for row in x:
            for piece in tok.decode(row).split(tok.eos_token):
                assert len(piece) < 8 or piece in whole
    assert about["sample_tokens"] == 512 and about["corpus"] == str(tmp_path / "ref")
    # a tokenizer that is not the model's is refused, naming the field
    from forgetless.data import train_bpe

    other = train_bpe(texts, vocab_size=300)
    other.save_pretrained(tmp_path / "other-tok")
    with pytest.raises(ValueError, match="forget_tokenizer .* is not the model's tokenizer"):
        forgetting_reference(cfg.model_copy(update={"forget_tokenizer": str(tmp_path / "other-tok")}), tok, 10**6)


def test_reference_defaults_and_balance(base_run, tmp_path) -> None:
    """A forgetless base measures on its own corpus as it comes; another model on stdlib with
    equal tokens of each source; both in the checkpoint's own tokenizer."""
    from forgetless.models import load_model
    from forgetless.train.finetune import forgetting_reference

    own = _resolved(str(base_run.out_dir), tmp_path)
    assert own.forget_balance is False and own.forget_tokenizer == str(base_run.final_checkpoint)
    outside = _resolved(str(base_run.final_checkpoint), tmp_path)  # a plain HF checkpoint folder
    assert (outside.forget_corpus, outside.forget_balance) == ("stdlib", True)
    assert outside.forget_tokenizer == str(base_run.final_checkpoint)
    # balance on a small corpus of code and text: as many code windows as text windows
    _folder(tmp_path / "mixed", code=True)
    cfg = outside.model_copy(update={"forget_corpus": str(tmp_path / "mixed")})
    model, tok = load_model(base_run.final_checkpoint)
    _, batches, by_source, about = forgetting_reference(cfg, tok, model.get_input_embeddings().num_embeddings)
    kinds = ["code" if "return x" in tok.decode(row) else "text" for x, _ in batches for row in x]
    share = -(-256 // cfg.forget_seq_len)  # half of the 512 tokens each, in whole windows
    assert kinds.count("code") == kinds.count("text") == share and "equal tokens per source" in about["mix"]
    assert set(by_source) == {"code", "text"}
