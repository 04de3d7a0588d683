"""Reference checkpoints for `forgetless fingerprint`, pretrained by the package's own `pretrain`.

A grid of presets × families × training lengths × (seed, lr) pairs; each finished run's weight
features (and, with --activations, its activation features) become one row of the calibration
file. The file holds features only, never weights. Runs are resumed/reused from --runs-dir, so a
killed grid picks up where it stopped and a feature change only needs the measuring pass again.

The shipped calibration (src/forgetless/analysis/fingerprint_reference.json) rests on this
reduced grid (70 runs), pretrained on the shared 2-core CPU machine (about 100 min in all):
- nano, micro and small × 80 and 240 steps × (seed 0, lr 3e-3) and (seed 1, lr 1e-3);
- medium (27M parameters) × 80 steps × the same two (seed, lr) pairs (no second length: CPU time);
- × adamw, signsgd (ℓ1→ℓ∞), muon (ℓ2→ℓ2), coltop1 (ℓ1→ℓ1), rowtop1 (ℓ∞→ℓ∞); batch 8 × 64 tokens
  of the stdlib corpus (BPE 4096), weight decay 0.1; activation sample 4096 validation tokens.

    python benchmarks/fingerprint_references.py --presets nano,micro,small --steps 80,240 \
        --runs-dir /tmp/fp-runs --train-only
    python benchmarks/fingerprint_references.py --presets medium --steps 80 \
        --runs-dir /tmp/fp-runs --train-only
    python benchmarks/fingerprint_references.py --presets nano,micro,small,medium --steps 80,240 \
        --runs-dir /tmp/fp-runs --finished-only --activations      # measures, writes the file

The full grid (three sizes × three lengths × every seed × every lr; CPU-hours, meant for a later
session or a GPU):

    python benchmarks/fingerprint_references.py --presets nano,micro,small --steps 80,240,720 \
        --seeds 0,1 --lrs 3e-3,1e-3 --full-product --runs-dir runs/fp-refs --activations

`--train-only` pretrains without measuring (to start the CPU-heavy part early). Issue 23 added
nano × 240 steps × (seed 0, lr 3e-3) × the five optimizers with weight decay 0, each measured as
trained and after a bf16 round trip (10 references), to the shipped file:

    python benchmarks/fingerprint_references.py --presets nano --steps 240 --seeds 0 --lrs 3e-3 \
        --weight-decays 0 --runs-dir /tmp/fp-extra/runs --activations --conversions bf16 \
        --out /tmp/fp-extra/wd0.json --add-to src/forgetless/analysis/fingerprint_reference.json

and, the same way, nano × 2400 steps (10× the longest), nano × 240 steps untied (`--ties untied`)
and gpt2-small (88M, 3.3× medium) × 80 steps × medium's two (seed, lr) pairs: 100 references.
Classify new references with the calibration they have not joined yet before `--add-to`:
`python benchmarks/fingerprint_out_of_sample.py NEW.json`. Commands and times: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from forgetless.analysis.calibration import grid, run_calibration
from forgetless.analysis.fingerprint import REFERENCE_PATH, load_references, save_references


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="nano,micro", help="model presets, comma-separated")
    ap.add_argument("--optimizers", default="adamw,signsgd,muon,coltop1,rowtop1")
    ap.add_argument("--steps", default="80,240", help="training lengths in optimizer steps")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--lrs", default="3e-3,1e-3")
    ap.add_argument("--weight-decays", default="0.1", help="pretraining weight decays, comma-separated")
    ap.add_argument("--ties", default="tied", help="tied, untied or both (comma-separated): whether the "
                    "input embedding is shared with the output head")
    ap.add_argument("--conversions", default="", help="also measure each run after these round trips "
                    "(bf16), one reference each; the run as trained is always measured")
    ap.add_argument("--full-product", action="store_true",
                    help="every seed × every lr (default: seed i paired with lr i, halving the grid)")
    ap.add_argument("--runs-dir", default="runs/fp-refs", type=Path)
    ap.add_argument("--out", default=REFERENCE_PATH, type=Path)
    ap.add_argument("--activations", action="store_true", help="also measure activation features")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--finished-only", action="store_true", help="measure finished runs only, train none")
    ap.add_argument("--add-to", type=Path, default=None,
                    help="then add the measured references to this reference file (same names replaced), "
                    "re-evaluated; its settings record what was added")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    specs = grid(a.presets.split(","), a.optimizers.split(","), [int(s) for s in a.steps.split(",")],
                 [int(s) for s in a.seeds.split(",")], [float(x) for x in a.lrs.split(",")], a.full_product,
                 [float(x) for x in a.weight_decays.split(",")], [_tie(t) for t in a.ties.split(",")])
    print(f"{len(specs)} reference runs", flush=True)
    run_calibration(a.out, a.runs_dir, specs, activations=a.activations, device=a.device,
                    train_only=a.train_only, finished_only=a.finished_only,
                    conversions=["", *(c for c in a.conversions.split(",") if c)], log=lambda s: print(s, flush=True))
    if a.add_to is not None and not a.train_only:
        add_references(a.out, a.add_to)


def _tie(word: str) -> bool:
    if word not in ("tied", "untied"):
        raise SystemExit(f"--ties: {word!r} is neither 'tied' nor 'untied'")
    return word == "tied"


def add_references(new: Path, into: Path) -> None:
    """Merge the references of file `new` into file `into` (a same-named one is replaced)."""
    added, doc = load_references(new)
    old, base = load_references(into)
    names = {r.name for r in added}
    settings = dict(base.get("settings", {}))
    settings.setdefault("added", []).append({"from": str(new), "n": len(added), **doc.get("settings", {})})
    save_references([r for r in old if r.name not in names] + added, into, settings)
    print(f"{into}: {len(old)} -> {len(old) - len(names & {r.name for r in old}) + len(added)} references")


if __name__ == "__main__":
    sys.exit(main())
