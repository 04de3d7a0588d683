"""How the paired error of forgetting's change depends on the window length, at a fixed sample.

    .venv/bin/python benchmarks/paired_window_length.py RUN [--step N] [--lengths 128,256,512,1024]

RUN is a finished `forgetless finetune` directory (its config.yaml names the base; its last
checkpoint, or step N, is the finetuned model). Both models score the run's own forgetting sample
(eval_tokens tokens of the reference text, as the run measured it), per token. Two views:

- blocks: the tokens scored in the run's windows (forget_seq_len, as the run evaluated them) are
  grouped into consecutive blocks of B tokens, and the paired standard error of Δ is taken over
  blocks. Were tokens farther apart than 128 independent, every B would give the same error; the
  error's growth with B is the correlation inside a window that the sample-size rule allows for.
- windows: the same number of tokens evaluated as windows of L (the context the model sees
  changes too), the error over windows.

Printed per view: Δ, its error, the spread R = se · √units / |Δ|, what independent tokens would
give (R128 · √(128 / L)) and what the rule in `train/sample_size.py` expects (R128 · (128 / L) to
the power WINDOW_EXPONENT); the window exponent is read off R's fall with L.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from forgetless.models import load_model
from forgetless.train.config import FinetuneConfig
from forgetless.train.evaluate import ratio_se
from forgetless.train.finetune import describe_base, forgetting_reference
from forgetless.train.sample_size import PAIRED_R128, WINDOW_EXPONENT


@torch.no_grad()
def token_losses(model, batches) -> np.ndarray:
    """Per-token losses, one row per window (the sample's windows all have the same length)."""
    model.eval()
    rows = []
    for x, y in batches:
        for i in range(len(x)):  # a window at a time: a 50k vocabulary's logits for a whole batch are GBs
            logits = model(input_ids=x[i:i + 1], use_cache=False).logits[0].float()
            rows.append(F.cross_entropy(logits, y[i], reduction="none").double().numpy())
    return np.stack(rows)


def spread(delta: np.ndarray) -> tuple[float, float, float]:
    """(Δ, its error over the rows, R = se·√rows/|Δ|) of per-token changes laid out in rows."""
    sums, counts = delta.sum(1), np.full(len(delta), delta.shape[1], dtype=float)
    d, se = sums.sum() / counts.sum(), ratio_se(sums, counts)
    return d, se, se * len(delta) ** 0.5 / abs(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--lengths", default="128,256,512,1024")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = FinetuneConfig.from_yaml(args.run / "config.yaml")
    info = describe_base(cfg.base)
    cfg = cfg.resolved(info)
    steps = sorted((args.run / "checkpoints").glob("step-*"))
    tuned_dir = args.run / "checkpoints" / f"step-{args.step:06d}" if args.step else steps[-1]
    base, tokenizer = load_model(info["checkpoint"])
    tuned, _ = load_model(tuned_dir)
    lengths = [int(x) for x in args.lengths.split(",")]
    vocab = base.get_input_embeddings().num_embeddings
    print(f"run {args.run}: base {cfg.base}; finetuned {tuned_dir.name}; {base.num_parameters():,} parameters; "
          f"sample {cfg.eval_tokens:,} tokens; rule R128 = {PAIRED_R128}")
    print(f"| view | unit (tokens) | units | Δ | paired se | R = se·√units/|Δ| | independent tokens' R | "
          f"the rule's R (exponent {WINDOW_EXPONENT}) | measured / rule |")
    print("|---|---|---|---|---|---|---|---|---|")
    _, batches, _, about = forgetting_reference(cfg, tokenizer, vocab)
    delta = token_losses(tuned, batches) - token_losses(base, batches)
    window = delta.shape[1]
    for b in [b for b in lengths if b <= window and window % b == 0]:
        d, se, r = spread(delta.reshape(-1, b))
        free, rule = PAIRED_R128 * (128 / b) ** 0.5, PAIRED_R128 * (128 / b) ** WINDOW_EXPONENT
        print(f"| blocks of the run's {window}-token windows | {b} | {delta.size // b} | {d:+.4f} | {se:.4f} | "
              f"{r:.3f} | {free:.3f} | {rule:.3f} | {r / rule:.2f} |")
    for length in [n for n in lengths if n <= window]:
        cut = cfg.model_copy(update={"forget_seq_len": length})
        _, batches, _, _ = forgetting_reference(cut, tokenizer, vocab)
        d, se, r = spread(token_losses(tuned, batches) - token_losses(base, batches))
        free, rule = PAIRED_R128 * (128 / length) ** 0.5, PAIRED_R128 * (128 / length) ** WINDOW_EXPONENT
        print(f"| windows of {length} | {length} | {cfg.eval_tokens // length} | {d:+.4f} | {se:.4f} | {r:.3f} | "
              f"{free:.3f} | {rule:.3f} | {r / rule:.2f} |")


if __name__ == "__main__":
    main()
