"""Training throughput of the project's loop beside a hand-written nanoGPT-style loop, same batches.

For each preset (default micro and small, batch 32 x seq 128 = 4096 tokens per step):
  reference   a minimal GPT written here: pre-norm blocks (RMSNorm), fused qkv, RoPE, sdpa causal
              attention, SwiGLU (fused gate/up), tied embeddings, torch.optim.AdamW(foreach=True),
              global-norm clipping 1.0; the model a researcher would write, same sizes as the preset
  ours        `forgetless.train.pretrain` itself (HF LlamaForCausalLM, forgetless.optim "adamw",
              cosine schedule, clipping, progress off), eager and with torch.compile
Both draw their batches with `forgetless.data.sample_batch(train, 32, 128, seed=0, step)` from the
same token shards, in the same process, one after the other.

Figures printed:
  tokens/s    training tokens per second after `--warmup` steps (ours: from the loop's own
              metrics.jsonl lines, which exclude evaluation and checkpoint time)
  ratio       ours / reference
  MFU         6·N·(tokens/s) / peak, N = parameters (tied embedding once: it is the head's matmul),
              peak = the best fp32 matmul rate this benchmark measures (2n³ flops, n in 512..2048)
  muon/adamw  seconds per training step of ours with optimizer muon over ours with adamw
Targets (issue 4): ours >= 1.1x reference on small, >= 50% MFU; muon step <= 1.10x adamw step on
small at 4096 tokens per step. The machine may be shared: figures carry its load noise.

    python benchmarks/train_throughput.py                  # micro and small, eager and compiled
    python benchmarks/train_throughput.py --quick          # small only, fewer steps, no compile
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from forgetless.data import cache_dir, prepare_pretraining_data, sample_batch
from forgetless.models import PRESETS
from forgetless.train import PretrainConfig, pretrain

BATCH, SEQ = 32, 128


# ---------------------------------------------------------------- the hand-written reference
class Block(nn.Module):
    def __init__(self, d: int, heads: int, f: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.gate_up = nn.Linear(d, 2 * f, bias=False)
        self.down = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).transpose(1, 3).unbind(2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class GPT(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, f: int, context: int = 1024) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, f) for _ in range(layers))
        self.norm = nn.RMSNorm(d, eps=1e-5)
        hd = d // heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(context).float(), inv)
        self.register_buffer("cos", torch.cat((angles, angles), -1).cos(), persistent=False)
        self.register_buffer("sin", torch.cat((angles, angles), -1).sin(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.cos[:t], self.sin[:t])
        logits = self.norm(x) @ self.embed.weight.T  # tied head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def reference_tokens_per_s(preset: str, vocab: int, train, steps: int, warmup: int, compile_: bool) -> tuple[float, int]:
    p = PRESETS[preset]
    torch.manual_seed(0)
    model = GPT(vocab, p["hidden_size"], p["num_hidden_layers"], p["num_attention_heads"], p["intermediate_size"])
    n_params = sum(q.numel() for q in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    step_fn = torch.compile(model) if compile_ else model
    start = 0.0
    for k in range(steps):
        if k == warmup:
            start = time.perf_counter()
        x, y = sample_batch(train, BATCH, SEQ, 0, k)
        for group in opt.param_groups:  # nanoGPT sets the scheduled lr by hand each step
            group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * k / steps))
        loss = step_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (steps - warmup) * BATCH * SEQ / (time.perf_counter() - start), n_params


# ---------------------------------------------------------------- the project's loop
def ours_tokens_per_s(preset: str, corpus: str, vocab: int, optimizer: str, steps: int, warmup: int,
                      compile_: bool, work: Path) -> tuple[float, int]:
    out = work / f"{preset}-{optimizer}-{'compiled' if compile_ else 'eager'}"
    cfg = PretrainConfig(model=preset, corpus=corpus, vocab_size=vocab, optimizer=optimizer, steps=steps,
                         batch_size=BATCH, seq_len=SEQ, eval_every=steps, eval_tokens=BATCH * SEQ,
                         log_every=1, compile=compile_, progress=False, out_dir=out)
    pretrain(cfg)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    a, b = train[warmup - 1], train[-1]  # the window after step `warmup`, training time only
    weights = load_file(str(out / "checkpoints" / f"step-{steps:06d}" / "model.safetensors"))
    n_params = sum(q.numel() for q in weights.values())  # tied head not stored: counted once
    return (b["tokens"] - a["tokens"]) / (b["wall_time"] - a["wall_time"]), n_params


# ---------------------------------------------------------------- peak
def matmul_peak() -> float:
    """Best fp32 matmul rate (flop/s) over a few square sizes, median of repetitions."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(5 if n < 2048 else 3):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def small_corpus(root: Path, max_bytes: int = 3_000_000) -> str:
    """A few MB of the standard library's Python files: throughput does not depend on the text,
    and this keeps tokenising the corpus to seconds."""
    import sysconfig

    if root.is_dir() and any(root.iterdir()):
        return str(root)
    src, size = Path(sysconfig.get_paths()["stdlib"]), 0
    root.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.py")):
        text = path.read_text(errors="ignore")
        (root / path.name.replace(".py", ".txt")).write_text(text)
        size += len(text)
        if size > max_bytes:
            break
    return str(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="micro,small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    ap.add_argument("--quick", action="store_true", help="small only, 20 steps, no compile")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.quick:
        args.presets, args.steps, args.warmup, args.no_compile = "small", 20, 5, True
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"batch {BATCH} x seq {SEQ} = {BATCH * SEQ} tokens/step, {args.steps} steps, first {args.warmup} not timed")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = small_corpus(cache_dir() / "bench-corpus")  # fixed path: its shards are cached
        rows = []
        for preset in args.presets.split(","):
            vocab = PretrainConfig(out_dir=work, model=preset).resolved().vocab_size
            train = prepare_pretraining_data(corpus, vocab_size=vocab, progress=False).train
            ref, n = reference_tokens_per_s(preset, vocab, train, args.steps, args.warmup, False)
            rows.append((preset, "reference (eager)", ref, n, ref))
            modes = [False] if args.no_compile else [False, True]
            for compiled in modes:
                tps, n_ours = ours_tokens_per_s(preset, corpus, vocab, "adamw", args.steps, args.warmup, compiled, work)
                rows.append((preset, f"ours adamw ({'compiled' if compiled else 'eager'})", tps, n_ours, ref))
            if preset == "small":
                for compiled in modes:
                    tps, n_ours = ours_tokens_per_s(preset, corpus, vocab, "muon", args.steps, args.warmup, compiled, work)
                    rows.append((preset, f"ours muon ({'compiled' if compiled else 'eager'})", tps, n_ours, ref))
        print(f"{'preset':<7} {'loop':<26} {'params':>10} {'tokens/s':>10} {'vs ref':>7} {'MFU':>6}")
        for preset, name, tps, n, ref in rows:
            print(f"{preset:<7} {name:<26} {n:>10,} {tps:>10,.0f} {tps / ref:>6.2f}x {6 * n * tps / peak:>6.1%}")
        for mode in ("eager", "compiled"):
            adamw = [r[2] for r in rows if r[0] == "small" and r[1] == f"ours adamw ({mode})"]
            muon = [r[2] for r in rows if r[0] == "small" and r[1] == f"ours muon ({mode})"]
            if adamw and muon:
                print(f"small {mode}: muon step / adamw step = {adamw[0] / muon[0]:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
