"""The evaluation noise of a frontier gap: standard errors of held-out losses, alone and paired.

    .venv/bin/python benchmarks/paired_eval_noise.py CELL [EVAL_TOKENS]

CELL is a finished finetune cell of a sweep (its config.yaml and final checkpoint). The base and
the finetuned model are evaluated on the same forgetting sample (EVAL_TOKENS tokens, default the
cell's) and the same task records, row by row. Printed per axis: each model's mean loss with its
standard error over rows (the loss of one model on a sample of this size), and the paired
difference base − finetuned with its standard error (what a gap between two models measured on
the same sample is uncertain by). Ratio estimator over rows: SE = √(Σ (d_i − m·n_i)²)/Σ n_i ·
√(k/(k − 1)), d_i a row's summed token losses (or their difference), n_i its tokens, k rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from forgetless.data import SFTCollator, load_task
from forgetless.models import load_model
from forgetless.train.config import FinetuneConfig
from forgetless.train.evaluate import shift_sft_batch
from forgetless.train.finetune import describe_base, forgetting_reference


@torch.no_grad()
def row_sums(model, batches) -> tuple[np.ndarray, np.ndarray]:
    """(summed token loss, token count) per row of every batch."""
    model.eval()
    sums, counts = [], []
    for x, y in batches:
        logits = model(x).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                 ignore_index=-100, reduction="none").view(y.shape)
        mask = (y != -100).float()
        sums += (loss * mask).sum(1).tolist()
        counts += mask.sum(1).tolist()
    return np.array(sums), np.array(counts)


def ratio_se(d: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    m = d.sum() / n.sum()
    k = len(d)
    return float(m), float(np.sqrt(((d - m * n) ** 2).sum() * k / (k - 1)) / n.sum())


def final_checkpoint(cell: Path) -> Path:
    steps = sorted((cell / "checkpoints").glob("step-*"))
    if (cell / "final").is_dir():
        return cell / "final"
    if not steps:
        raise SystemExit(f"{cell}: no checkpoint")
    return steps[-1]


def main(cell: Path, eval_tokens: int | None) -> None:
    cfg = FinetuneConfig.from_yaml(cell / "config.yaml")
    info = describe_base(cfg.base)
    cfg = cfg.resolved(info)
    if eval_tokens:
        cfg = cfg.model_copy(update={"eval_tokens": eval_tokens})
    base, tokenizer = load_model(info["checkpoint"])
    tuned, _ = load_model(final_checkpoint(cell))
    _, forget_batches, _, about = forgetting_reference(cfg, tokenizer, base.get_input_embeddings().num_embeddings)
    records = load_task(cfg.task, "validation", n=cfg.eval_n, seed=cfg.task_seed, columns=cfg.columns)
    collator = SFTCollator(tokenizer, cfg.seq_len)
    learn_batches = [shift_sft_batch(collator(records[i:i + 8])) for i in range(0, len(records), 8)]
    print(f"cell {cell.name}: base {cfg.base}, lr {cfg.lr:g}, {final_checkpoint(cell).name}; forgetting sample "
          f"{about['sample_tokens']} tokens in {about['windows']} windows, {len(records)} task records")
    print("| axis | base loss ± SE | finetuned loss ± SE | paired difference ± SE |")
    print("|---|---|---|---|")
    for axis, batches in (("forgetting", forget_batches), ("learning", learn_batches)):
        (sa, na), (sb, nb) = row_sums(base, batches), row_sums(tuned, batches)
        (ma, ea), (mb, eb), (md, ed) = ratio_se(sa, na), ratio_se(sb, nb), ratio_se(sa - sb, na)
        print(f"| {axis} | {ma:.4f} ± {ea:.4f} | {mb:.4f} ± {eb:.4f} | {md:+.4f} ± {ed:.4f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
