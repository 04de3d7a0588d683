"""Pretraining tokens/s of one sweep worker, beside the matmul peak measured in the same run.

A sweep on a CPU runs one cell per core with one torch thread each (sweep.runner), so this
measures one process at `--threads` threads (default 1) — the rate a pretraining cell gets — for
each model preset at the study's vocabulary, several batch x sequence shapes (same tokens per
step where possible), eager and with `compile: true` (torch.compile of forward + loss, as
`forgetless.train.loop` does). The step is `forgetless.train.loop.train_step` with the pretrain
loss function, on batches `sample_batch(train, B, T, seed=0, k)` of the stdlib corpus.

After `--warmup` steps (compilation happens there) the contenders take turns, `--rounds` rounds
of `--per-round` steps, so a load change on a shared machine hits them alike; medians over rounds.

  tok/s   median over rounds of training tokens per second
  MFU     6·N·tok/s / peak (N: parameters, the tied embedding once); peak: best fp32 matmul rate
          at these threads (2n³ flops, n in 256..1024), measured before and after

    python benchmarks/pretrain_throughput.py                      # nano and micro at vocab 2048
    python benchmarks/pretrain_throughput.py --presets nano --shapes 32x128,16x256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from forgetless.data import prepare_pretraining_data, sample_batch
from forgetless.models import build_model, count_parameters
from forgetless.train import PretrainConfig
from forgetless.train.evaluate import chunked_train_loss_sum, lm_loss_sum
from forgetless.train.loop import cosine_schedule, train_step
from forgetless.train.runtime import make_optimizer, setup_compile_cache

CPU = torch.device("cpu")


def matmul_peak() -> float:
    """Best fp32 matmul rate (flop/s) at the current thread count over a few square sizes."""
    best = 0.0
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        times = []
        for _ in range(7):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def contender(preset: str, vocab: int, optimizer: str, batch: int, seq: int, compiled: bool, train, work: Path,
              overrides: dict):
    torch.manual_seed(0)
    model = build_model(preset, vocab_size=vocab, **overrides)
    cfg = PretrainConfig(out_dir=work, model=preset, optimizer=optimizer, steps=1000, batch_size=batch,
                         seq_len=seq, compile=compiled).resolved()
    opt = make_optimizer(model, cfg)
    sched = cosine_schedule(opt, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
    params = [p for p in model.parameters() if p.requires_grad]
    if compiled:
        setup_compile_cache()
    loss_fn = torch.compile(lm_loss_sum) if compiled else chunked_train_loss_sum
    model.train()
    null = __import__("contextlib").nullcontext

    def step(k: int) -> None:
        train_step(model, loss_fn, [sample_batch(train, batch, seq, 0, k)], opt, sched, params,
                   cfg.grad_clip, null, CPU)

    return step, count_parameters(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="nano,micro")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--shapes", default="32x128,16x256,64x64,64x128")
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--overrides", default="", help="LlamaConfig fields, e.g. hidden_size=64,intermediate_size=172")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: int(v) for k, v in (kv.split("=") for kv in args.overrides.split(",") if kv)}
    data = prepare_pretraining_data("stdlib", None, args.vocab, progress=False)
    peak = matmul_peak()
    print(f"overrides {overrides}; optimizer {args.optimizer}")
    print(f"threads {args.threads}; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (before)")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    modes = [False] if args.no_compile else [False, True]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for preset in args.presets.split(","):
            for b, t in shapes:
                for compiled in modes:
                    step, n = contender(preset, args.vocab, args.optimizer, b, t, compiled, data.train, Path(tmp),
                                         overrides)
                    t0 = time.perf_counter()
                    for k in range(args.warmup):
                        step(k)
                    runs[(preset, b, t, compiled)] = [step, n, time.perf_counter() - t0, [], args.warmup]
        for _ in range(args.rounds):
            for key, entry in runs.items():
                step, _, _, rates, k0 = entry
                t0 = time.perf_counter()
                for k in range(k0, k0 + args.per_round):
                    step(k)
                entry[4] = k0 + args.per_round
                rates.append(key[1] * key[2] * args.per_round / (time.perf_counter() - t0))
    peak = max(peak, matmul_peak())
    print(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (best of before/after)")
    print(f"{'preset':<7}{'params':>9}{'shape':>9}{'mode':>9}{'warmup s':>10}{'tok/s':>9}{'MFU':>7}")
    for (preset, b, t, compiled), (_, n, warm, rates, _) in runs.items():
        rate = statistics.median(rates)
        print(f"{preset:<7}{n:>9,}{f'{b}x{t}':>9}{'compile' if compiled else 'eager':>9}{warm:>10.1f}"
              f"{rate:>9,.0f}{6 * n * rate / peak:>7.1%}")


if __name__ == "__main__":
    main()
