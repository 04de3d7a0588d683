"""Cost of kl_to_base per evaluation (issue 25 §3): the forgetting pass alone, the base's pass that
keeps its distributions (once per run), and a later pass that also measures KL(base ‖ model), on a
freshly initialised preset model (no download) over the finetune's default reference sample.

    python benchmarks/kl_cost.py --preset nano --vocab 4096 --tokens 16384 --seq-len 128 --repeats 3

Prints one line per pass: median wall and CPU seconds over the repeats (the plain and KL passes
interleaved), and the KL pass's extra share.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from forgetless.models.presets import build_model
from forgetless.train.evaluate import KL_TOP_K, BaseReference, forgetting_batches, loss_stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = build_model(a.preset, a.vocab).eval()
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tokens = np.random.default_rng(0).integers(0, a.vocab, 4 * a.tokens + 1).astype(np.int64)
    batches = forgetting_batches(tokens, a.seq_len, a.tokens, a.batch)
    cpu = torch.device("cpu")

    def timed(fn) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the
        steadier figure (other jobs stretch the wall time, not the work done)."""
        w, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    ref = BaseReference()
    record = [timed(lambda: loss_stats(base, batches, cpu, base=ref))]
    plain, kl = [], []
    for _ in range(a.repeats):  # interleaved, so a change of load hits both alike
        plain.append(timed(lambda: loss_stats(tuned, batches, cpu)))
        kl.append(timed(lambda: loss_stats(tuned, batches, cpu, base=ref)))
    kept = sum(t.numel() * t.element_size() for piece in ref.pieces for t in piece)
    med = lambda v, i: statistics.median(x[i] for x in v)  # noqa: E731
    print(f"{a.preset} vocab {a.vocab}, {a.tokens:,} reference tokens (seq_len {a.seq_len}), "
          f"{a.threads} threads, KL_TOP_K {KL_TOP_K}, base distributions kept: {kept / 2**20:.1f} MiB; "
          f"median of {a.repeats}, wall s / CPU s")
    p, k = (med(plain, 0), med(plain, 1)), (med(kl, 0), med(kl, 1))
    r = record[0]
    print(f"forgetting pass alone        {p[0]:7.3f} / {p[1]:7.3f}")
    print(f"base pass, keeping its dists {r[0]:7.3f} / {r[1]:7.3f}  (once per run; CPU +{100 * (r[1] / p[1] - 1):.0f}%)")
    print(f"pass measuring KL too        {k[0]:7.3f} / {k[1]:7.3f}  (per evaluation; CPU +{100 * (k[1] / p[1] - 1):.0f}%, "
          f"wall +{100 * (k[0] / p[0] - 1):.0f}%)")


if __name__ == "__main__":
    main()
