"""Data pipeline costs: tokenisation throughput of the shard writer, and batch sampling per step.

1. Tokenisation of the standard-library corpus with its cached 8192-token BPE, tokens/s:
     shard writer   forgetless.data.encode.encode_corpus with N worker processes: encode, add EOS,
                    save chunk files, assemble the train/val shards (the whole path, disk included)
     encode_batch   the plain single-process loop a user would write: tokenizer.encode_batch over
                    batches of documents (the Rust tokenizer's own thread pool left on), ids
                    collected into one numpy array (nothing written)
   Both read the same in-memory documents; the figure is the median of --reps runs.
2. sample_batch(train, 8, 256, seed, step) per call, against one training step (forward +
   backward, no optimizer) of a 6-layer, width-256 LlamaForCausalLM (vocab 8192) on a batch of
   8 x 256 tokens on the CPU: the share of a step that batch sampling costs.

    python benchmarks/tokenize_throughput.py [--reps 3] [--workers N]

The corpus's tokenizer is trained (once, cached under $FORGETLESS_CACHE) if missing; that time is
not counted. On a shared machine the figures carry its load noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from forgetless.data import prepare_pretraining_data, sample_batch
from forgetless.data.corpus import DEFAULT_VAL_FRACTION, open_corpus
from forgetless.data.encode import _default_workers, encode_corpus


def time_encode(docs, tokenizer, workers: int, reps: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(reps):
        out = Path(tempfile.mkdtemp(prefix="fl-bench-"))
        t0 = time.perf_counter()
        stats = encode_corpus(docs, tokenizer, out, val_fraction=DEFAULT_VAL_FRACTION,
                              workers=workers, progress=False)
        times.append(time.perf_counter() - t0)
        n = stats["train"]["tokens"] + stats["val"]["tokens"]
        shutil.rmtree(out)
    return statistics.median(times), n


def time_encode_batch(docs, tokenizer, reps: int, batch_docs: int = 64) -> tuple[float, int]:
    backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id
    texts = [d.text for d in docs]
    times, n = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        parts = []
        for i in range(0, len(texts), batch_docs):
            for enc in backend.encode_batch(texts[i:i + batch_docs], add_special_tokens=False):
                parts.append(np.asarray(enc.ids + [eos], dtype=np.uint16))
        n = int(np.concatenate(parts).size)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def time_sampling_vs_step(train: np.ndarray, reps: int) -> tuple[float, float]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=704,
                         num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256)
    model = LlamaForCausalLM(config)
    sample_ms = []
    for step in range(200 * reps):
        t0 = time.perf_counter()
        x, y = sample_batch(train, 8, 256, seed=0, step=step)
        sample_ms.append((time.perf_counter() - t0) * 1e3)
    step_ms = []
    for step in range(3 + 5 * reps):  # the first 3 warm up
        x, y = sample_batch(train, 8, 256, seed=0, step=step)
        t0 = time.perf_counter()
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)
        step_ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(sample_ms), statistics.median(step_ms[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=_default_workers())
    args = parser.parse_args()
    print(f"cores available {_default_workers()}, torch threads {torch.get_num_threads()}, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}")
    data = prepare_pretraining_data("stdlib", vocab_size=8192, progress=False)
    docs = list(open_corpus("stdlib").documents())
    megabytes = sum(len(d.text.encode()) for d in docs) / 1e6
    print(f"corpus stdlib: {len(docs)} documents, {megabytes:.1f} MB; tokenizer "
          f"{data.meta['tokenizer']}")

    t_plain, n_plain = time_encode_batch(docs, data.tokenizer, args.reps)
    t_shard, n_shard = time_encode(docs, data.tokenizer, args.workers, args.reps)
    assert n_plain == n_shard, (n_plain, n_shard)  # same tokens, EOS included
    print(f"{'tokenisation':<34}{'seconds':>9}{'tokens/s':>12}{'ratio':>8}")
    print(f"{'encode_batch, 1 process':<34}{t_plain:>9.2f}{n_plain / t_plain:>12,.0f}{1:>8.2f}")
    label = f"shard writer, {args.workers} workers"
    print(f"{label:<34}{t_shard:>9.2f}{n_shard / t_shard:>12,.0f}{t_plain / t_shard:>8.2f}")

    sample, step = time_sampling_vs_step(data.train, args.reps)
    print(f"sample_batch 8x256: {sample:.3f} ms; train step 8x256 (6x256 Llama, fwd+bwd): "
          f"{step:.1f} ms; sampling / step = {sample / step:.2e}")


if __name__ == "__main__":
    main()
