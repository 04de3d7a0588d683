"""The memorisation experiment: train with each optimizer on a partly corrupted corpus and track
exact match / token accuracy of continuations on clean and corrupted blocks (paper §4.2, A.2).

An experiment runner, like `forgetless reproduce`, so it sits above the sweep in the layering
(docs/ARCHITECTURE.md): its settings are a study's `reproduce.memorization` field or the options of
`forgetless memorization` (both analysis/memorization_config.MemorizationConfig), and what it
measures is read by analysis/memorization_run.py (matched-loss points, Table 3).

Small-scale defaults follow the CPU pilot (docs/pilot.md): a corpus small enough to be memorised (32k tokens),
many epochs, a graded measure beside exact match, and the optimizers compared both at matched
steps and at matched training loss (Muon lowers the loss faster, so equal steps flatter it).

Each training example is one whole block (seq_len = block_len, blocks shuffled every epoch), so
the evaluation prompt — the first P tokens of a block — is exactly what the model saw in training.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from forgetless.analysis.memorization import block_losses, block_view, evaluate_blocks
from forgetless.analysis.memorization_config import MemorizationConfig
from forgetless.analysis.memorization_run import table3
from forgetless.data import corrupt_blocks, prepare_pretraining_data
from forgetless.data.sft import IGNORE_INDEX
from forgetless.models import build_model
from forgetless.optim import build
from forgetless.train.evaluate import lm_loss_sum
from forgetless.train.loop import cosine_schedule, train_step


def prepare_corpus(cfg: MemorizationConfig) -> dict:
    """First `n_tokens` training tokens of the corpus, a share p of blocks permuted."""
    data = prepare_pretraining_data(cfg.corpus, vocab_size=cfg.vocab_size, progress=False)
    if len(data.train) < cfg.n_tokens:
        raise ValueError(f"n_tokens={cfg.n_tokens} exceeds the {len(data.train)} training tokens of {cfg.corpus!r}")
    raw = np.asarray(data.train[: cfg.n_tokens], dtype=np.int64)
    tokens, mask = corrupt_blocks(raw, cfg.block_len, cfg.p, cfg.seed)
    blocks, corrupted = block_view(np.asarray(tokens), np.asarray(mask), cfg.block_len)
    rng = np.random.default_rng(cfg.seed)
    clean_idx, bad_idx = np.flatnonzero(~corrupted), np.flatnonzero(corrupted)
    n_eval = min(cfg.n_eval, len(clean_idx), len(bad_idx))
    if n_eval == 0:
        raise ValueError(f"n_tokens={cfg.n_tokens}, block_len={cfg.block_len}, p={cfg.p} leave no clean or no corrupted block")
    return {
        "blocks": blocks, "corrupted": corrupted, "vocab_size": data.vocab_size,
        "eval_clean": blocks[np.sort(rng.choice(clean_idx, n_eval, replace=False))],
        "eval_corrupted": blocks[np.sort(rng.choice(bad_idx, n_eval, replace=False))],
    }


def eval_point(model, corpus: dict, cfg: MemorizationConfig, step: int) -> dict:
    losses = block_losses(model, corpus["blocks"].to(cfg.device))
    flags = torch.as_tensor(corpus["corrupted"], device=losses.device)
    point = {"step": step, "tokens": step * cfg.batch_size * cfg.block_len,
             "train_loss": float(losses.mean()), "clean_loss": float(losses[~flags].mean()),
             "corrupted_loss": float(losses[flags].mean())}
    for split in ("clean", "corrupted"):
        res = evaluate_blocks(model, corpus[f"eval_{split}"].to(cfg.device), cfg.pairs)
        point.update({f"{split}_{k}": v for k, v in res.items()})
    return point


def train_one(cfg: MemorizationConfig, corpus: dict, optimizer: str, lr: float,
              on_point: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one model from scratch with the training box's step and schedule; evaluate at step
    0 and every `eval_every` steps."""
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = build_model(cfg.preset, corpus["vocab_size"]).to(device)
    opt = build(model, optimizer, lr=lr, weight_decay=cfg.weight_decay)
    # Warm-up of whole steps, rounded down and at least one (this experiment's rule since it had
    # its own schedule; the training box rounds to nearest), cosine to zero after it.
    warm = max(1, int(cfg.warmup * cfg.steps))
    sched = cosine_schedule(opt, cfg.steps, warm / cfg.steps, min_ratio=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    blocks = corpus["blocks"]
    rng = np.random.default_rng((cfg.seed, 1))
    order, cursor = rng.permutation(len(blocks)), 0
    history, start = [], time.time()
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            point = {"optimizer": optimizer, "lr": lr, **eval_point(model, corpus, cfg, step),
                     "wall_time": round(time.time() - start, 2)}
            history.append(point)
            if on_point:
                on_point(point)
            if not math.isfinite(point["train_loss"]):
                break  # diverged: later points would be NaN too
        if step == cfg.steps:
            break
        if cursor + cfg.batch_size > len(order):  # next epoch, reshuffled
            order, cursor = rng.permutation(len(blocks)), 0
        x = blocks[order[cursor : cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        # Next-token targets of the whole block: the last position has none.
        y = torch.cat([x[:, 1:], torch.full_like(x[:, :1], IGNORE_INDEX)], dim=1)
        model.train()
        train_step(model, lm_loss_sum, [(x, y)], opt, sched, params, grad_clip=1.0,
                   autocast=contextlib.nullcontext, device=device)
    return history


def _score(history: list[dict], cfg: MemorizationConfig) -> float:
    """Selection score of a run (paper: best accuracy on clean data): final mean clean exact
    match over the pairs, token accuracy breaking ties."""
    last = history[-1]
    exact = np.mean([last[f"clean_exact_{p}_{g}"] for p, g in cfg.pairs])
    token = np.mean([last[f"clean_token_{p}_{g}"] for p, g in cfg.pairs])
    return float(exact + 1e-3 * token) if math.isfinite(last["train_loss"]) else -math.inf


def run_memorization(cfg: MemorizationConfig, out_dir: str | Path | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Every optimizer × lr; keeps per optimizer the lr with the best clean accuracy.

    Returns {"config", "runs": {f"{opt}@{lr}": history}, "selected": {opt: history}}; with
    `out_dir`, writes history.jsonl, results.json, table.md and figure7.png there.
    """
    corpus = prepare_corpus(cfg)
    log(f"corpus: {len(corpus['blocks'])} blocks of {cfg.block_len} tokens, "
        f"{int(corpus['corrupted'].sum())} corrupted; eval {len(corpus['eval_clean'])} blocks per split")
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "history.jsonl").write_text("")

    def record(point: dict) -> None:
        if out:
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(point) + "\n")
        pair = cfg.pairs[-1]
        log(f"{point['optimizer']:>8} lr {point['lr']:.0e} step {point['step']:>5}  loss {point['train_loss']:.3f}  "
            f"clean/corrupted exact {pair[0]}→{pair[1]}: {point[f'clean_exact_{pair[0]}_{pair[1]}']:.1%} / "
            f"{point[f'corrupted_exact_{pair[0]}_{pair[1]}']:.1%}")

    runs = {f"{o}@{lr:g}": train_one(cfg, corpus, o, lr, record) for o in cfg.optimizers for lr in cfg.lrs}
    selected = {o: max((runs[f"{o}@{lr:g}"] for lr in cfg.lrs), key=lambda h: _score(h, cfg))
                for o in cfg.optimizers}
    result = {"config": cfg.model_dump(), "runs": runs, "selected": selected}
    if out:
        from forgetless.analysis.plots import memorization_curves

        (out / "results.json").write_text(json.dumps(result, indent=1))
        (out / "table.md").write_text(table3(selected, cfg.pairs))
        memorization_curves(selected, cfg.pairs, out / "figure7.png", "exact")
        memorization_curves(selected, cfg.pairs, out / "figure7_token.png", "token")
    return result
