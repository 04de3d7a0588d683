"""`forgetless sweep --prune` against the unpruned sweep: frontier hypervolume kept, finetuning
compute used, and whether the verdicts change (issue 26 §2).

    .venv/bin/python benchmarks/prune.py --study cpu-full
    .venv/bin/python benchmarks/prune.py --study remedies --warmup 2 --workers 2

The study runs once unpruned in <dir>/full. Its pretraining cells (store rows, points and run
directories) are then copied to <dir>/pruned with every finetune reset to pending, and the same
study runs again there with --prune: both sweeps start their finetunes from the same bases, and
only finetuning compute differs. Figures:

- compute: finetuning steps trained (each run's last evaluated step; a pruned run stops at one)
  and wall seconds of the finetune cells, pruned / full;
- hypervolume kept: per (base, task) panel, the hypervolume of the Pareto set of all finetune
  points (every method together), reference = the full panel's worst forgetting and learning;
  pruned / full, the mean and the worst panel;
- verdicts: claim 2 and claim 3 on both stores (report.verdicts), status and effect.
Goal in the issue: >= 95% of the hypervolume at <= 60% of the finetuning compute.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np


def finetune_cost(store, study: str) -> tuple[int, float, int]:
    """(steps trained, wall seconds, runs pruned) over the study's finetune cells."""
    steps, wall, pruned = 0, 0.0, 0
    last: dict[str, int] = defaultdict(int)
    for p in store.points(study=study):
        if p["kind"] == "finetune":
            last[p["run_id"]] = max(last[p["run_id"]], int(p["step"]))
    for r in store.runs(study):
        if r["kind"] != "finetune":
            continue
        steps += last.get(r["cell_id"], 0)
        if r.get("started_at") and r.get("finished_at"):
            wall += r["finished_at"] - r["started_at"]
        pruned += bool((r.get("meta") or {}).get("pruned"))
    return steps, wall, pruned


def panel_points(rows: list[dict]) -> dict[tuple, np.ndarray]:
    out: dict[tuple, list] = defaultdict(list)
    for r in rows:
        if np.isfinite(r["forgetting"]) and np.isfinite(r["learning"]):
            out[(r["base"], r["task"])].append((r["forgetting"], r["learning"]))
    return {k: np.asarray(v) for k, v in out.items()}


def hypervolume_kept(full_rows: list[dict], pruned_rows: list[dict]) -> dict[tuple, float]:
    from forgetless.analysis.pareto import hypervolume

    full, pruned = panel_points(full_rows), panel_points(pruned_rows)
    kept = {}
    for key, pts in full.items():
        ref = pts.max(axis=0) + 1e-9  # the full panel's worst values (a point on it adds nothing)
        hv = hypervolume(pts, ref)
        kept[key] = hypervolume(pruned.get(key, np.empty((0, 2))), ref) / hv if hv > 0 else float("nan")
    return kept


def seed_pruned_dir(full: Path, pruned: Path, study: str) -> None:
    """<pruned>: the full sweep's store with every finetune reset, and its pretraining run dirs."""
    from forgetless.sweep.store import Store

    pruned.mkdir(parents=True)
    with Store(full / "results.sqlite") as st:  # a consistent copy, WAL included
        st.db.execute(f"VACUUM INTO '{pruned / 'results.sqlite'}'")
    with Store(pruned / "results.sqlite") as st:
        for r in st.runs(study):
            if r["kind"] == "finetune":
                st.reset(r["cell_id"])
            elif r.get("out_dir") and Path(full / "cells" / r["cell_id"]).is_dir():
                shutil.copytree(full / "cells" / r["cell_id"], pruned / "cells" / r["cell_id"])
    for extra in full.iterdir():  # tokenizer and token caches beside the store, if any
        if extra.name not in ("cells", "results.sqlite", "results.sqlite-wal", "results.sqlite-shm") \
                and not (pruned / extra.name).exists():
            (shutil.copytree if extra.is_dir() else shutil.copy)(extra, pruned / extra.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="cpu-full", help="preset name or study file")
    ap.add_argument("--dir", default="runs/prune-bench", help="where the two sweeps go")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    from forgetless.report.tables import finetune_rows
    from forgetless.report.verdicts import claim2_same_optimizer, claim3_lora
    from forgetless.sweep.prune import PruneRule
    from forgetless.sweep.runner import default_workers, run_sweep
    from forgetless.sweep.store import Store
    from forgetless.sweep.study import load_study

    study = load_study(args.study)
    root = Path(args.dir)
    full, pruned = root / "full", root / "pruned"
    workers = default_workers() if args.workers is None else args.workers
    run_sweep(study, workers=workers, out_dir=full, progress=False)
    if pruned.exists():
        shutil.rmtree(pruned)
    seed_pruned_dir(full, pruned, study.name)
    run_sweep(study, workers=workers, out_dir=pruned, progress=False, prune=PruneRule(warmup=args.warmup))

    result: dict = {"study": study.name, "warmup": args.warmup, "workers": workers}
    rows = {}
    for name, where in (("full", full), ("pruned", pruned)):
        with Store(where / "results.sqlite", readonly=True) as st:
            steps, wall, n_pruned = finetune_cost(st, study.name)
            rows[name] = finetune_rows(st, study.name)
        result[name] = {"finetune_steps": steps, "finetune_wall_s": round(wall, 1), "runs_pruned": n_pruned}
    kept = hypervolume_kept(rows["full"], rows["pruned"])
    result["compute_share"] = result["pruned"]["finetune_steps"] / max(result["full"]["finetune_steps"], 1)
    result["wall_share"] = result["pruned"]["finetune_wall_s"] / max(result["full"]["finetune_wall_s"], 1e-9)
    result["hypervolume_kept_mean"] = float(np.nanmean(list(kept.values()))) if kept else None
    result["hypervolume_kept_worst"] = float(np.nanmin(list(kept.values()))) if kept else None
    result["verdicts"] = {}
    for claim in (claim2_same_optimizer, claim3_lora):
        a, b = claim(rows["full"]), claim(rows["pruned"])
        result["verdicts"][claim.__name__] = {"full": [a.status, a.effect], "pruned": [b.status, b.effect],
                                             "changed": a.status != b.status}
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
