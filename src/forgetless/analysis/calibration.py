"""Reference checkpoints for the fingerprint: small models forgetless pretrains itself.

Each reference is a `forgetless.train.pretrain` run (a preset, an optimizer, a seed, a learning
rate, a training length); its weight features (and activation features, when asked, on the
corpus's validation split) become one row of the calibration set. The shipped
`fingerprint_reference.json` is made by `benchmarks/fingerprint_references.py` (its docstring
gives the grid it rests on and the full grid's command); `forgetless fingerprint --calibrate`
runs the same code on a grid given on the command line.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from forgetless.data import prepare_pretraining_data
from forgetless.models import load_model
from forgetless.optim import describe
from forgetless.train import PretrainConfig, pretrain

from .activations import token_windows
from .fingerprint import Reference, model_features, save_references

DEFAULT_PRESETS = ("nano", "micro")
DEFAULT_OPTIMIZERS = ("adamw", "signsgd", "muon", "coltop1", "rowtop1")


@dataclass(frozen=True)
class RunSpec:
    preset: str
    optimizer: str
    seed: int
    lr: float
    steps: int
    weight_decay: float = 0.1  # the pretraining default; real runs use 0 to 0.1
    tied: bool = True  # the presets tie the embedding to the output head; Llama, Qwen-7B+ and Mistral do not

    @property
    def name(self) -> str:
        wd = "" if self.weight_decay == 0.1 else f"-wd{self.weight_decay:g}"
        return f"{self.preset}-{self.optimizer}-s{self.seed}-lr{self.lr:g}-{self.steps}{wd}" + \
            ("" if self.tied else "-untied")


def grid(presets: Sequence[str], optimizers: Sequence[str], steps: Sequence[int], seeds: Sequence[int],
         lrs: Sequence[float], full_product: bool = False,
         weight_decays: Sequence[float] = (0.1,), ties: Sequence[bool] = (True,)) -> list[RunSpec]:
    """Presets × lengths × (seed, lr) × optimizers. Without `full_product` seed i is paired with
    lr i (cycling the shorter list): every seed and every lr still appears, at half the cost."""
    if full_product:
        pairs = list(itertools.product(seeds, lrs))
    else:
        pairs = [(seeds[i % len(seeds)], lrs[i % len(lrs)]) for i in range(max(len(seeds), len(lrs)))]
    return [RunSpec(p, o, s, lr, n, wd, t) for t in ties for wd in weight_decays for p in presets for n in steps
            for s, lr in pairs for o in optimizers]


def reference_from_checkpoint(path: str | Path, optimizer: str, windows: torch.Tensor | None = None, *,
                              name: str | None = None, preset: str = "", seed: int = 0, lr: float = 0.0,
                              tokens: int = 0, steps: int = 0, val_loss: float = math.nan,
                              weight_decay: float = 0.1, conversion: str = "") -> Reference:
    """Features of a checkpoint whose pretraining optimizer is known. `conversion` "bf16": the
    weights go through a bfloat16 round trip first, as the hub's bf16 uploads do."""
    model, _ = load_model(path)
    if conversion == "bf16":
        model = model.to(torch.bfloat16).float()
    elif conversion:
        raise ValueError(f"conversion: {conversion!r} is unknown; allowed: '' or 'bf16'")
    feats = model_features(model.eval(), windows)
    tied = bool(getattr(model.config, "tie_word_embeddings", True))  # as the checkpoint says, not as asked
    return Reference(name or str(path), optimizer, describe(optimizer).family, feats, preset, seed, lr,
                     tokens, val_loss, steps, weight_decay, conversion, tied)


def run_calibration(
    out: str | Path,
    runs_dir: str | Path,
    specs: Sequence[RunSpec],
    corpus: str = "stdlib",
    vocab_size: int = 4096,
    batch_size: int = 8,
    seq_len: int = 64,
    probe_tokens: int = 4096,
    activations: bool = False,
    device: str = "auto",
    train_only: bool = False,
    finished_only: bool = False,
    conversions: Sequence[str] = ("",),
    log: Callable[[str], None] = print,
) -> dict | None:
    """Pretrain every spec (reusing finished runs in `runs_dir`), measure their features, and write
    the reference file `out` with its evaluation. `train_only`: pretrain, measure nothing.
    `finished_only`: train nothing, measure the specs whose run is already done (a grid that
    was cut short is written as what it is: `settings.grid` lists only the measured runs).
    `conversions`: each run is measured once per entry ("" as trained, "bf16" after a bf16 round
    trip), one reference each."""
    windows = None
    if activations and not train_only:
        data = prepare_pretraining_data(corpus, vocab_size=vocab_size, progress=False)
        windows = token_windows(data.val, probe_tokens, seq_len)
    refs, start = [], time.time()
    measured = []
    for spec in specs:
        status = Path(runs_dir) / spec.name / "status.json"
        if finished_only and not (status.is_file() and '"done"' in status.read_text()):
            log(f"{spec.name}: not trained, skipped")
            continue
        cfg = PretrainConfig(
            out_dir=Path(runs_dir) / spec.name, model=spec.preset, optimizer=spec.optimizer, lr=spec.lr,
            seed=spec.seed, steps=spec.steps, batch_size=batch_size, seq_len=seq_len, corpus=corpus,
            vocab_size=vocab_size, eval_tokens=probe_tokens, eval_every=spec.steps, progress=False,
            device=device, resume=True, weight_decay=spec.weight_decay,
            model_overrides={} if spec.tied else {"tie_word_embeddings": False},
        )
        result = pretrain(cfg)
        if result.status != "done" or result.final_checkpoint is None:
            log(f"{spec.name}: {result.status}, left out of the calibration set")
            continue
        val = result.points[-1].get("val_loss", math.nan) if result.points else math.nan
        if train_only:
            log(f"{spec.name}: val loss {val:.3f}  ({time.time() - start:.0f} s)")
            continue
        for conversion in conversions:
            ref = reference_from_checkpoint(
                result.final_checkpoint, spec.optimizer, windows,
                name=spec.name + (f"-{conversion}" if conversion else ""), preset=spec.preset, seed=spec.seed,
                lr=spec.lr, tokens=spec.steps * batch_size * seq_len, steps=spec.steps, val_loss=val,
                weight_decay=spec.weight_decay, conversion=conversion)
            refs.append(ref)
        measured.append(spec)
        log(f"{spec.name}: val loss {val:.3f}, q,k,v stable rank/r "
            f"{ref.features.get('attn_in_srank', math.nan):.3f}  ({time.time() - start:.0f} s)")
    if train_only:
        return None
    settings = {"corpus": corpus, "vocab_size": vocab_size, "batch_size": batch_size, "seq_len": seq_len,
                "probe_tokens": probe_tokens, "activations": activations,
                "grid": sorted({(s.preset, s.steps, s.seed, s.lr, s.weight_decay, s.tied) for s in measured}),
                "conversions": list(conversions),
                "presets": sorted({s.preset for s in measured}),
                "optimizers": sorted({s.optimizer for s in measured}),
                "steps": sorted({s.steps for s in measured}), "seconds": round(time.time() - start, 1),
                "created": time.strftime("%Y-%m-%d")}
    return save_references(refs, out, settings)
