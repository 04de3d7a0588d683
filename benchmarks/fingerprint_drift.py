"""The fingerprint along one pretraining run: every kept checkpoint, its deciding features and answer.

    .venv/bin/python benchmarks/fingerprint_drift.py RUN [RUN ...] [--out FILE.json] [--add-to REFERENCE.json]

RUN is a `forgetless pretrain` directory kept with several checkpoints (`--keep-checkpoints`). For
each checkpoint: the three `mpdev` features (how far each module kind's singular values are from a
random matrix's; they decide the headline on every real checkpoint tried), the headline with the
prior and without it, and the features out of the references' range. It shows whether a run
drifts, with training length, toward the other group's range (issue 23 §1: real checkpoints are
trained 10^4-10^6 steps; the references at most 2400). `--out`: each run's last checkpoint is
measured as a reference (named as benchmarks/fingerprint_references.py names its runs, measured as
it measures them, activations included) and its features written to FILE.json; `--add-to`: they also join
that reference file, after their rows above were classified without them.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import tempfile
from pathlib import Path

import torch

from forgetless.analysis.calibration import RunSpec, reference_from_checkpoint
from forgetless.analysis.fingerprint import fingerprint, model_features, save_references
from forgetless.models import load_model
from forgetless.train.config import PretrainConfig
from forgetless.train.rundir import RunDir

FEATURES = ("attn_in_mpdev", "mlp_in_mpdev", "down_mpdev")


def _best(groups: dict[str, float] | None) -> str:
    """For an unknown answer: the group that came nearest, with its probability."""
    if not groups:
        return " (out of range)"
    best = max(groups, key=groups.get)
    return f" ({best} {groups[best]:.3f})"


def main(runs: list[Path], out: Path | None = None, add_to: Path | None = None) -> None:
    torch.set_num_threads(1)
    print("| run | step | " + " | ".join(FEATURES) + " | headline, with the prior | without it | out of range |")
    print("|---|---|" + "---|" * len(FEATURES) + "---|---|---|")
    for run in runs:
        for ckpt in sorted((run / "checkpoints").glob("step-*")):
            model, _ = load_model(ckpt)
            feats = model_features(model)
            pred = fingerprint(feats)
            p = _best(pred.groups) if pred.headline == "unknown" else f" {pred.probability:.3f}"
            q = _best(pred.groups_without_prior) if pred.headline_without_prior == "unknown" \
                else f" {max(pred.groups_without_prior.values()):.3f}"
            print(f"| {run.name} | {int(ckpt.name.split('-')[1])} | "
                  + " | ".join(f"{feats[f]:.4f}" for f in FEATURES)
                  + f" | {pred.headline}{p} | {pred.headline_without_prior}{q} | "
                  + f"{', '.join(d['feature'] for d in pred.out_of_range) or '-'} |")
    if out is not None or add_to is not None:
        _measure(runs, out, add_to)


def _measure(runs: list[Path], out: Path | None, add_to: Path | None) -> None:
    from forgetless.analysis.activations import token_windows
    from forgetless.data import prepare_pretraining_data

    refs = []
    for run in runs:
        cfg = PretrainConfig.from_yaml(run / "config.yaml")
        data = prepare_pretraining_data(cfg.corpus, vocab_size=cfg.vocab_size, progress=False)
        windows = token_windows(data.val, cfg.eval_tokens, cfg.seq_len)
        last = sorted((run / "checkpoints").glob("step-*"))[-1]
        steps = int(last.name.split("-")[1])
        spec = RunSpec(preset=cfg.model, optimizer=cfg.optimizer, seed=cfg.seed, lr=cfg.lr, steps=steps,
                       weight_decay=cfg.weight_decay,
                       tied=cfg.model_overrides.get("tie_word_embeddings") is not False)
        vals = [r for r in RunDir(run).read_metrics() if r.get("step") == steps and "val_loss" in r]
        refs.append(reference_from_checkpoint(
            last, cfg.optimizer, windows, name=spec.name, preset=cfg.model, seed=cfg.seed, lr=cfg.lr,
            tokens=steps * cfg.batch_size * cfg.seq_len, steps=steps,
            val_loss=vals[-1]["val_loss"] if vals else math.nan, weight_decay=cfg.weight_decay))
        print(f"{spec.name}: measured from {last}")
    settings = {"from": "benchmarks/fingerprint_drift.py", "runs": [str(r) for r in runs]}
    if out is not None:  # test cases: their features, no evaluation of them as a calibration set
        save_references(refs, out, settings, evaluation=False)
        print(f"{out}: {len(refs)} references")
    if add_to is None:
        return
    here = Path(__file__).resolve().parent
    spec_ = importlib.util.spec_from_file_location("fingerprint_references", here / "fingerprint_references.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / "long.json"
        save_references(refs, new, settings)
        module.add_references(new, add_to)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--add-to", type=Path, default=None)
    a = ap.parse_args()
    main(a.runs, a.out, a.add_to)
