"""Claim 5 re-judged on a finished `forgetless reproduce --preset quick` folder, read only.

Reads the pretraining rows from the folder's results store (opened read-only) and each base's
activation probe from its `probes/` cache (written by reproduce; nothing is trained or probed
here), and prints claim 5's verdict as the engine decides it now: inputs, AdamW against row top-1
at q = ∞; outputs, column top-1 against AdamW at p = 1. Beside it, for comparison, the contrast
used before issue 21 (every p = 1 base against every other base, which lets column top-1's q = 1
into the input part) and AdamW against Muon alone.

    .venv/bin/python benchmarks/claim5_quick.py RUN_DIR [STUDY]     # STUDY default: quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from forgetless.report import tables
from forgetless.report.statistics import decide
from forgetless.report.verdicts_more import NOT_PROBED, claim5_sparsity
from forgetless.sweep.store import Store


def _contrast(rows: list[dict], side: str, one: set[str], other: set[str]) -> str:
    """Per seed, mean over probed kinds of `one`'s minus `other`'s sparsity, decided as claim 5 is."""
    effects = []
    for seed in sorted({r["seed"] for r in rows}):
        kinds = []
        for kind in sorted({r["kind"] for r in rows} - NOT_PROBED):
            a = [r[f"{side}_sparsity"] for r in rows if r["seed"] == seed and r["kind"] == kind and r["optimizer"] in one]
            b = [r[f"{side}_sparsity"] for r in rows if r["seed"] == seed and r["kind"] == kind and r["optimizer"] in other]
            if a and b:
                kinds.append(np.mean(a) - np.mean(b))
        if kinds:
            effects.append(float(np.mean(kinds)))
    return decide(effects, 0.005).text()


def main(run: Path, study: str = "quick") -> None:
    with Store(run / "results.sqlite", readonly=True) as store:
        pretrain = tables.pretrain_rows(store, study)
    cached = [json.loads(p.read_text()) for p in sorted((run / "probes").glob("*.json"))]
    by_checkpoint = {Path(c["checkpoint"]).resolve(): c for c in cached}
    probes = {}
    for row in pretrain:
        found = row["checkpoint"] and by_checkpoint.get((run / row["checkpoint"]).resolve()
                                                        if not Path(row["checkpoint"]).is_absolute()
                                                        else Path(row["checkpoint"]).resolve())
        if found:
            probes[row["cell_id"]] = found
    print(f"{len(pretrain)} bases, {len(probes)} with a cached probe")
    _, activations = tables.analysis_rows(pretrain, probes)
    v = claim5_sparsity(activations)
    print(f"claim 5: {v.status}; {v.ours}" + (f" ({v.scale_note})" if v.scale_note else ""))
    print("\n".join(v.details))
    print("before issue 21, input part (p = 1: adamw, coltop1 against rowtop1, muon):",
          _contrast(activations, "input", {"adamw", "coltop1"}, {"rowtop1", "muon"}))
    print("AdamW against Muon alone, inputs:", _contrast(activations, "input", {"adamw"}, {"muon"}))
    for opt in sorted({r["optimizer"] for r in activations}):
        rows = [r for r in activations if r["optimizer"] == opt and r["kind"] not in NOT_PROBED]
        print(f"{opt}: mean input sparsity {np.mean([r['input_sparsity'] for r in rows]):.3f}, "
              f"output {np.mean([r['output_sparsity'] for r in rows]):.3f} over {len(rows)} (seed, kind) rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(sys.argv[2:3]))
