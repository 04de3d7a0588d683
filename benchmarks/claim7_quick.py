"""Claim 7 on the quick preset's memorisation test, three seeds, judged on the training curves.

Runs `forgetless.experiments.memorization` with the quick preset's settings (its study file's
`reproduce.memorization`) for seeds 0, 1, 2 (each about 90 s on a 2-core CPU; a seed whose
results.json exists is read back), then prints claim 7's verdict as the report decides it (each
pair at the lowest training loss both reach) and, for comparison, on the final-step rates alone.

    .venv/bin/python benchmarks/claim7_quick.py [OUT_DIR]     # default /tmp/claim7_quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from forgetless.experiments.memorization import run_memorization
from forgetless.report.tables import memorization_rows
from forgetless.report.verdicts_more import claim7_memorization
from forgetless.sweep.study import load_study


def main(out: Path) -> None:
    torch.set_num_threads(1)
    results = []
    quick = load_study("quick").reproduce.memorization  # the quick preset's `reproduce.memorization`
    for seed in (0, 1, 2):
        cfg = quick.model_copy(update={"seeds": [seed]}).configs()[0]
        path = out / f"seed-{seed}" / "results.json"
        if not path.is_file():
            run_memorization(cfg, out_dir=path.parent, log=lambda _m: None)
        results.append(json.loads(path.read_text()))
    rows = memorization_rows(results)
    on_curve = claim7_memorization(rows)
    final = claim7_memorization([{k: v for k, v in r.items() if k != "curve"} for r in rows])
    print(f"at matched training loss: {on_curve.status}; {on_curve.ours}")
    print("\n".join(on_curve.details))
    print(f"final-step rates only: {final.status}; {final.ours}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/claim7_quick"))
