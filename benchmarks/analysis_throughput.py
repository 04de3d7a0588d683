"""Throughput of the analysis box: activation probe (tokens/s, with and without hooks), weight
spectra (matrices/s) and greedy generation of the memorisation test with and without KV cache.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/analysis_throughput.py
    .venv/bin/python benchmarks/analysis_throughput.py --device cuda --probe-tokens 65536

Models are freshly initialised presets (throughput does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import time

import torch

from forgetless.analysis.activations import probe_activations
from forgetless.analysis.memorization import greedy_generate
from forgetless.analysis.spectrum import weight_spectra
from forgetless.models import build_model

VOCAB = {"small": 8192, "gpt2-small": 50257}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 1) -> float:
    if device.startswith("cuda"):
        fn()  # warm-up (allocator, kernels); on CPU the first call costs the same as the rest
        _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def bench(preset: str, device: str, probe_tokens: int, seq_len: int, batch: int, gen: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(preset, VOCAB[preset]).to(device).eval()
    windows = torch.randint(0, VOCAB[preset], (max(1, probe_tokens // seq_len), seq_len))
    n_tok = windows.numel()

    @torch.no_grad()
    def plain() -> None:
        for i in range(0, len(windows), batch):
            model(input_ids=windows[i : i + batch].to(device), use_cache=False)

    t_plain = timed(plain, device)
    t_probe = timed(lambda: probe_activations(model, windows, batch_size=batch), device)
    n_mat = len(weight_spectra(model))
    t_spec = timed(lambda: weight_spectra(model), device)
    b, p, g = gen
    prompts = torch.randint(0, VOCAB[preset], (b, p), device=device)
    t_cache = timed(lambda: greedy_generate(model, prompts, g, use_cache=True), device)
    t_full = timed(lambda: greedy_generate(model, prompts, g, use_cache=False), device)
    print(f"{preset:>10} | forward {n_tok / t_plain:9.0f} tok/s | probe {n_tok / t_probe:9.0f} tok/s "
          f"({t_probe / t_plain:.2f}x forward) | spectrum {n_mat / t_spec:7.1f} matrices/s ({n_mat} in {t_spec:.2f} s) | "
          f"generate {b}x{p}+{g}: KV cache {b * g / t_cache:8.0f} tok/s, no cache {b * g / t_full:8.0f} tok/s "
          f"({t_full / t_cache:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default="small,gpt2-small")
    ap.add_argument("--probe-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--gen", default="16,32,32", help="batch,prompt_len,gen_len")
    args = ap.parse_args()
    gen = tuple(int(x) for x in args.gen.split(","))
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, probe sample {args.probe_tokens} tokens "
          f"(seq {args.seq_len}, batch {args.batch_size})")
    for preset in args.presets.split(","):
        bench(preset, args.device, args.probe_tokens, args.seq_len, args.batch_size, gen)


if __name__ == "__main__":
    main()
