"""Training throughput of the project's training step beside a hand-written nanoGPT-style loop.

For each preset (default micro and small, batch 32 x seq 128 = 4096 tokens per step):
  reference   a minimal GPT written here: pre-norm blocks (RMSNorm), fused qkv, RoPE, sdpa causal
              attention, SwiGLU (fused gate/up), tied embeddings, torch.optim.AdamW(foreach=True),
              global-norm clipping 1.0; the model a researcher would write, same sizes as the preset
  ours        `forgetless.train.loop.train_step`, the step `pretrain`/`finetune` run, on
              `build_model(preset)` (HF LlamaForCausalLM) with `forgetless.optim.build` (adamw or
              muon), the cosine schedule and clipping 1.0; eager and with torch.compile
All draw batch k with `forgetless.data.sample_batch(train, 32, 128, seed=0, k)` from the same
shards, in one process. After `--warmup` steps each (compilation happens there) the contenders
take turns: `--rounds` rounds of `--per-round` steps each, so load changes on a shared machine
hit all of them alike; medians over rounds are printed.

  tokens/s    median over rounds of training tokens per second
  vs ref      median over rounds of (ours / reference) in the same round
  MFU         6·N·(tokens/s) / peak, N = parameters (tied embedding once: it is the head's matmul),
              peak = best fp32 matmul rate measured here (2n³ flops, n in 512..2048, before and after)
  muon/adamw  median over rounds of (muon step time / adamw step time), small preset
Targets (issue 4): ours >= 1.1x reference on small, >= 50% MFU; muon step <= 1.10x adamw step on
small at 4096 tokens per step.

    python benchmarks/train_throughput.py                  # micro and small, eager and compiled
    python benchmarks/train_throughput.py --quick          # small only, eager only
    python benchmarks/train_throughput.py --device cuda --presets gpt2-small --batch 16 --seq 1024
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.data import cache_dir, prepare_pretraining_data, sample_batch
from forgetless.models import PRESETS, build_model, count_parameters
from forgetless.train import PretrainConfig
from forgetless.train.evaluate import lm_loss_sum
from forgetless.train.loop import cosine_schedule, train_step
from forgetless.train.runtime import make_optimizer, setup_compile_cache

BATCH, SEQ = 32, 128
DEVICE = torch.device("cpu")


def sync() -> None:
    """Wait for the GPU, so a timer measures work done rather than work queued."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def autocast():
    """bf16 autocast on CUDA (as `pretrain` runs there), nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if DEVICE.type == "cuda" else contextlib.nullcontext()


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


def reference_step(preset: str, vocab: int, train) -> tuple[Callable[[int], None], int]:
    p = PRESETS[preset]
    torch.manual_seed(0)
    model = GPT(vocab, p["hidden_size"], p["num_hidden_layers"], p["num_attention_heads"],
                p["intermediate_size"]).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)

    def step(k: int) -> None:
        x, y = (t.to(DEVICE) for t in sample_batch(train, BATCH, SEQ, 0, k))
        for group in opt.param_groups:  # nanoGPT sets the scheduled lr by hand each step
            group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * k / 1000))
        with autocast():
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, sum(q.numel() for q in model.parameters())


# ---------------------------------------------------------------- the project's step
def ours_step(preset: str, vocab: int, train, optimizer: str, compile_: bool, work: Path) -> tuple[Callable[[int], None], int]:
    torch.manual_seed(0)
    model = build_model(preset, vocab).to(DEVICE)
    cfg = PretrainConfig(out_dir=work, model=preset, optimizer=optimizer, steps=1000, batch_size=BATCH,
                         seq_len=SEQ, compile=compile_).resolved()
    opt = make_optimizer(model, cfg)
    scheduler = cosine_schedule(opt, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
    params = [p for p in model.parameters() if p.requires_grad]
    if compile_:
        setup_compile_cache()
    loss_fn = torch.compile(lm_loss_sum) if compile_ else lm_loss_sum
    model.train()

    def step(k: int) -> None:
        micro = [sample_batch(train, BATCH, SEQ, 0, k)]
        train_step(model, loss_fn, micro, opt, scheduler, params, cfg.grad_clip, autocast, DEVICE)

    return step, count_parameters(model)


# ---------------------------------------------------------------- peak
def matmul_peak() -> float:
    """Best matmul rate (flop/s) over a few square sizes, median of repetitions: fp32 on the CPU,
    bf16 on CUDA (the precision training computes in there)."""
    best = 0.0
    cuda = DEVICE.type == "cuda"
    for n in (4096, 8192, 16384) if cuda else (512, 1024, 2048):
        dtype = torch.bfloat16 if cuda else torch.float32
        a, b = torch.randn(n, n, device=DEVICE, dtype=dtype), torch.randn(n, n, device=DEVICE, dtype=dtype)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(10 if cuda else 5 if n < 2048 else 3):
            sync()
            t = time.perf_counter()
            a @ b
            sync()
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
    global BATCH, SEQ, DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="micro,small")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled contenders")
    ap.add_argument("--quick", action="store_true", help="small only, eager only, 3 rounds")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: bf16 autocast, bf16 matmul peak (issue 8's GPU figures)")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--seq", type=int, default=SEQ)
    args = ap.parse_args()
    BATCH, SEQ, DEVICE = args.batch, args.seq, torch.device(args.device)
    if args.quick:
        args.presets, args.rounds, args.no_compile = "small", 3, True
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH} x seq {SEQ} = "
          f"{BATCH * SEQ} tokens/step; {args.warmup} warm-up steps, then {args.rounds} rounds of "
          f"{args.per_round} steps per contender", flush=True)
    corpus = small_corpus(cache_dir() / "bench-corpus")  # fixed path: its shards are cached
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            vocab = PretrainConfig(out_dir=tmp, model=preset).resolved().vocab_size
            train = prepare_pretraining_data(corpus, vocab_size=vocab, progress=False).train
            modes = [False] if args.no_compile else [False, True]
            optimizers = ["adamw", "muon"] if preset in ("small", "gpt2-small") else ["adamw"]
            steps = {"reference (eager)": reference_step(preset, vocab, train)}
            for opt_name in optimizers:
                for compiled in modes:
                    name = f"ours {opt_name} ({'compiled' if compiled else 'eager'})"
                    steps[name] = ours_step(preset, vocab, train, opt_name, compiled, Path(tmp))
            for name, (fn, _) in steps.items():
                t = time.perf_counter()
                for k in range(args.warmup):
                    fn(k)
                sync()
                print(f"  {preset} {name}: warm-up {time.perf_counter() - t:.1f} s", flush=True)
            rates: dict[str, list[float]] = {name: [] for name in steps}
            for r in range(args.rounds):
                for name, (fn, _) in steps.items():
                    sync()
                    t = time.perf_counter()
                    for k in range(args.per_round):
                        fn(args.warmup + r * args.per_round + k)
                    sync()
                    rates[name].append(args.per_round * BATCH * SEQ / (time.perf_counter() - t))
            ref = rates["reference (eager)"]
            for name, (_, n) in steps.items():
                ratio = statistics.median(a / b for a, b in zip(rates[name], ref, strict=True))
                rows.append((preset, name, n, statistics.median(rates[name]), ratio, rates[name]))
    peak = max(peak, matmul_peak())
    kind = "bf16" if DEVICE.type == "cuda" else "fp32"
    print(f"{kind} matmul peak {peak / 1e9:.0f} GFLOP/s on {args.device} (best of before and after)")
    print(f"{'preset':<7} {'loop':<24} {'params':>10} {'tokens/s':>9} {'vs ref':>7} {'MFU':>6}")
    for preset, name, n, tps, ratio, _ in rows:
        print(f"{preset:<7} {name:<24} {n:>10,} {tps:>9,.0f} {ratio:>6.2f}x {6 * n * tps / peak:>6.1%}")
    for mode in ("eager", "compiled"):
        for preset in args.presets.split(","):
            adamw = [r[5] for r in rows if r[0] == preset and r[1] == f"ours adamw ({mode})"]
            muon = [r[5] for r in rows if r[0] == preset and r[1] == f"ours muon ({mode})"]
            if adamw and muon:
                ratio = statistics.median(a / m for a, m in zip(adamw[0], muon[0], strict=True))
                print(f"{preset} {mode}: muon step / adamw step = {ratio:.3f} (median over rounds)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
