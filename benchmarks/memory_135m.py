"""Peak memory and time per step of the README's finetune command on a 135M-parameter Llama model.

The model is built from a config of SmolLM-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV heads,
MLP 1536, vocabulary 49152, tied embeddings), randomly initialised, saved with a byte-level BPE of
49152 tokens trained on the standard library (plus ChatML's <|im_start|>/<|im_end|> and a chat
template, as a chat model has). Then, as a subprocess:

    forgetless finetune CKPT --task arith --method full --optimizer adamw --lr 1e-5
                        --steps S --eval-every E [--eval-tokens N] --config log_every_1.yaml

every other setting at its default (batch 128, seq_len 1024, eval batch 128, memory plan automatic).
Peak RSS is the child's ru_maxrss (resource.getrusage(RUSAGE_CHILDREN)); time per step is the
median gap between consecutive per-step train records (log_every 1) that span no evaluation.

    python benchmarks/memory_135m.py [--steps 2] [--eval-every 2] [--eval-tokens 32768] [--work DIR]
    python benchmarks/memory_135m.py --long --steps 1 --eval-every 1 --eval-tokens 2048 --batch-size 5

--long trains on full-length records instead of arith's ~65-token ones: a chat-format jsonl
(`messages`, user question and a long assistant answer of standard-library text, >= 1024 tokens
each) is written and given as --task FILE, so every training forward is seq_len 1024 wide.
--batch-size 5 then keeps the step short on a CPU: with a 1 GiB activation budget the memory plan
cuts batches into pieces of 5 x 1024 tokens (the header's micro_batch), so one piece of 5 rows is
what a batch-128 step runs 26 times over: the peak is that of the default.

The tokenizer and model are built once under --work and reused. Goal (issue 14): peak RSS <= 6 GB.
benchmarks/readme_135m.py runs the README's whole practitioner section on the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
VOCAB = 49152


def build(ckpt: Path) -> None:
    import torch
    import transformers

    from forgetless.data import open_corpus, train_bpe
    from forgetless.data.corpus import iter_split

    if (ckpt / "model.safetensors").exists():
        return
    t0 = time.perf_counter()
    texts = (d.text for d in iter_split(open_corpus("stdlib"), "train", max_bytes=24_000_000))
    tok = train_bpe(texts, vocab_size=VOCAB - 2, min_frequency=1)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    print(f"tokenizer: {len(tok)} tokens in {time.perf_counter() - t0:.0f} s", flush=True)
    torch.manual_seed(0)
    # the embedding is 49152 rows even if the corpus gave the BPE fewer merges (padded vocabulary)
    cfg = transformers.LlamaConfig(vocab_size=max(VOCAB, len(tok)), hidden_size=576, intermediate_size=1536,
                                   num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                   max_position_embeddings=2048, tie_word_embeddings=True,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    model = transformers.LlamaForCausalLM(cfg)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", flush=True)
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)


def long_chat(path: Path, n: int = 40) -> Path:
    """A chat-format jsonl of n conversations whose answers are ~8 KB of standard-library source."""
    from forgetless.data import open_corpus

    docs = (d.text for d in open_corpus("stdlib").documents() if len(d.text) > 9000)
    with open(path, "w") as f:
        for i, text in zip(range(n), docs, strict=False):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Show me module {i}."},
                                             {"role": "assistant", "content": text[:8000]}]}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=None, help="forgetting tokens (default: the CLI's 65536)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/forgetless-mem135m"))
    ap.add_argument("--long", action="store_true", help="train on a chat jsonl of >= 1024-token records")
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args()
    ckpt, out = args.work / "smol-135m", args.work / f"ft-{int(time.time())}"
    build(ckpt)
    cfg = args.work / "log_every_1.yaml"
    cfg.write_text("log_every: 1\n")
    task = str(long_chat(args.work / "long_chat.jsonl")) if args.long else "arith"
    cmd = [sys.executable, "-m", "forgetless", "finetune", str(ckpt), "--task", task, "--method", "full",
           "--optimizer", "adamw", "--lr", "1e-5", "--steps", str(args.steps), "--eval-every", str(args.eval_every),
           "--config", str(cfg), "--no-progress", "--out", str(out)]
    if args.eval_tokens:
        cmd += ["--eval-tokens", str(args.eval_tokens)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if rc == 0 else []
    train = [r for r in records if r["kind"] == "train"]
    evals = {r["step"] for r in records if r["kind"] == "eval"}
    gaps = [b["wall_time"] - a["wall_time"] for a, b in zip(train, train[1:], strict=False) if a["step"] not in evals]
    first = train[0]["wall_time"] - next(r["wall_time"] for r in records if r["kind"] == "eval") if train else None
    header = next((r for r in records if r["kind"] == "header"), {})
    result = {"rc": rc, "peak_rss_gb": round(peak / 1e9, 2), "wall_s": round(wall, 1),
              "step_s_median": round(statistics.median(gaps), 1) if gaps else None,
              "first_step_s": round(first, 1) if first is not None else None,
              "memory_plan": header.get("memory"), "reference": header.get("reference"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
                         f"torch threads default, load avg {os.getloadavg()[0]:.1f}"}
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
