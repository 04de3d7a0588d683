"""Reference checkpoints for the fingerprint: tiny models forgetless pretrains itself.

Each reference is a `forgetless.train.pretrain` run (a preset, an optimizer, a seed, a learning
rate, a budget); its spectrum and activation features (on the corpus's validation split) become
one row of the calibration set. The shipped `fingerprint_reference.json` is made by

    forgetless fingerprint --calibrate --out src/forgetless/analysis/fingerprint_reference.json

with the defaults below (CPU, a few minutes). Users re-fit on their own references by passing
other presets / optimizers / budgets, or their own checkpoints with `--reference-run`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .activations import token_windows
from .fingerprint import Reference, model_features, save_references

# (seed, lr, steps) variants per preset and optimizer: seeds, learning rates and budgets all vary.
DEFAULT_VARIANTS: tuple[tuple[int, float, int], ...] = ((0, 3e-3, 100), (1, 1e-3, 150))
DEFAULT_PRESETS = ("nano", "micro")
DEFAULT_OPTIMIZERS = ("adamw", "signsgd", "muon", "coltop1", "rowtop1")


def reference_from_checkpoint(path: str | Path, optimizer: str, windows: torch.Tensor | None, *,
                              name: str | None = None, preset: str = "", seed: int = 0, lr: float = 0.0,
                              tokens: int = 0, val_loss: float = math.nan) -> Reference:
    """Features of a checkpoint whose pretraining optimizer is known."""
    from forgetless.models import load_model
    from forgetless.optim import describe

    model, _ = load_model(path)
    feats = model_features(model.eval(), windows)
    return Reference(name or str(path), optimizer, describe(optimizer).family, feats, preset, seed, lr,
                     tokens, val_loss)


def run_calibration(
    out: str | Path,
    runs_dir: str | Path,
    presets: tuple[str, ...] = DEFAULT_PRESETS,
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS,
    variants: tuple[tuple[int, float, int], ...] = DEFAULT_VARIANTS,
    corpus: str = "stdlib",
    vocab_size: int = 4096,
    batch_size: int = 8,
    seq_len: int = 64,
    probe_tokens: int = 4096,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Pretrain every preset × optimizer × variant (reusing finished runs in `runs_dir`), measure
    their features, and write the reference file `out` with its leave-one-out evaluation."""
    from forgetless.data import prepare_pretraining_data
    from forgetless.train import PretrainConfig, pretrain

    data = prepare_pretraining_data(corpus, vocab_size=vocab_size, progress=False)
    windows = token_windows(data.val, probe_tokens, seq_len)
    refs, start = [], time.time()
    for preset, optimizer, (seed, lr, steps) in itertools.product(presets, optimizers, variants):
        name = f"{preset}-{optimizer}-s{seed}-lr{lr:g}-{steps}"
        cfg = PretrainConfig(
            out_dir=Path(runs_dir) / name, model=preset, optimizer=optimizer, lr=lr, seed=seed,
            steps=steps, batch_size=batch_size, seq_len=seq_len, corpus=corpus, vocab_size=vocab_size,
            eval_tokens=probe_tokens, eval_every=steps, progress=False, device=device, resume=True,
        )
        result = pretrain(cfg)
        if result.status != "done" or result.final_checkpoint is None:
            log(f"{name}: {result.status}, left out of the calibration set")
            continue
        val = result.points[-1].get("val_loss", math.nan) if result.points else math.nan
        ref = reference_from_checkpoint(result.final_checkpoint, optimizer, windows, name=name, preset=preset,
                                        seed=seed, lr=lr, tokens=steps * batch_size * seq_len, val_loss=val)
        refs.append(ref)
        log(f"{name}: val loss {val:.3f}, hidden stable rank/r "
            f"{ref.features['attn_in_stable_rank_ratio']:.3f}  ({time.time() - start:.0f} s)")
    settings = {"corpus": corpus, "vocab_size": vocab_size, "batch_size": batch_size, "seq_len": seq_len,
                "probe_tokens": probe_tokens, "variants": [list(v) for v in variants],
                "presets": list(presets), "optimizers": list(optimizers),
                "seconds": round(time.time() - start, 1), "created": time.strftime("%Y-%m-%d")}
    return save_references(refs, out, settings)
