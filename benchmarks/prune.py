"""`forgetless sweep --prune` against the unpruned sweep: frontier hypervolume kept, finetuning
compute used, and whether the verdicts change (issue 26 §2).

    .venv/bin/python benchmarks/prune.py --study remedies --workers 2
    FORGETLESS_CACHE=/tmp/cf/cache .venv/bin/python benchmarks/prune.py --full /tmp/cf/run --dir runs/prune-cf
    .venv/bin/python benchmarks/prune.py --full runs/convergence --simulate --window 1
    .venv/bin/python benchmarks/prune.py --full /tmp/cf/run --grid     # 27 rules, offline
    .venv/bin/python benchmarks/prune.py --study remedies --judged      # finetunes that have a peer
    .venv/bin/python benchmarks/prune.py --study remedies --bases runs/quick   # quick's bases copied

The full side: the study run unpruned in <dir>/full, or with --full DIR a finished sweep directory
that is only read (its store opened read-only, its study the one the store recorded). The pruned
side: the full side's pretraining cells (store rows, points, run directories) copied to
<dir>/pruned with every finetune reset to pending, and the same study run there with --prune, so
both start their finetunes from the same bases and only finetuning differs. With --simulate nothing
trains: the rule is applied to the full store's points in the study's cell order as one worker
would meet them (each finetune judged against the finished peers before it, pruned peers with the
points they kept), which is what a one-worker pruned sweep records when training repeats itself
bit for bit (it does on CPU); it is for choosing a rule, the real run is the figure. Figures:

- compute: finetuning steps trained (each run's last evaluated step; a pruned run stops at one):
  independent of machine load; and wall seconds of the finetune cells (started to finished, so it
  depends on the load beside each side's run), pruned / full;
- hypervolume kept: per (base, task) panel, the hypervolume of the Pareto set of all finetune
  points (every method together), reference = the full panel's worst forgetting and learning;
  pruned / full, the mean and the worst panel;
- verdicts: claims 2, 3 and 6 (report.verdicts) on both, and for a study of remedies the
  `forgetless compare` answer per panel (report.compare), each with whether it changed.
Goal in the issue: >= 95% of the hypervolume at <= 60% of the finetuning compute.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def finetune_cost(store, study: str, kept: dict[str, int] | None = None,
                  only: set[str] | None = None) -> tuple[int, float, int]:
    """(steps trained, wall seconds, runs pruned) over the study's finetune cells (`only`: these);
    `kept` (a simulation): run -> the step it stopped at, and no wall seconds."""
    steps, wall, pruned = 0, 0.0, 0
    last: dict[str, int] = defaultdict(int)
    for p in store.points(study=study):
        if p["kind"] == "finetune":
            last[p["run_id"]] = max(last[p["run_id"]], int(p["step"]))
    for r in store.runs(study):
        if r["kind"] != "finetune" or (only is not None and r["cell_id"] not in only):
            continue
        if kept is not None:
            steps += kept.get(r["cell_id"], last.get(r["cell_id"], 0))
            pruned += r["cell_id"] in kept
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


def snapshot(full: Path, dest: Path) -> Path:
    """A copy of the finished sweep's store to read from: its files copied as they are (the
    database and any write-ahead log), so nothing is written in `full`, not even SQLite's
    shared-memory file that opening the store there would make."""
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        (dest / f"results.sqlite{suffix}").unlink(missing_ok=True)
        if (full / f"results.sqlite{suffix}").is_file():
            shutil.copy2(full / f"results.sqlite{suffix}", dest / f"results.sqlite{suffix}")
    (dest / "results.sqlite-shm").unlink(missing_ok=True)
    return dest / "results.sqlite"


def stored_study(store_path: Path, name: str | None):
    """The study a store recorded (its cells are the ones that ran), as a Study."""
    from forgetless.sweep.store import Store
    from forgetless.sweep.study import expand, load_study

    full = store_path.parent
    with Store(store_path, readonly=True) as st:
        names = st.studies()
        if name is None and len(names) != 1:
            raise SystemExit(f"{full}: the store holds studies {names}; name one with --study")
        name = name or names[0]
        row = st.db.execute("SELECT spec_json FROM studies WHERE name=?", (name,)).fetchone()
        if row is None:
            raise SystemExit(f"{full}: no study {name!r} in the store; it holds {names}")
        ids = {r["cell_id"] for r in st.runs(name)}
    study = load_study(json.loads(row[0]))
    if {c.cell_id for c in expand(study)} != ids:  # this forgetless expands it into other cells
        raise SystemExit(f"{full}: study {name!r} no longer expands into the cells its store ran")
    return study


def seed_bases(src: Path, full: Path, study) -> int:
    """A new <full>: a copy of the store of another sweep directory `src` and the run directories
    of its finished pretraining cells that `study` also has (same cell ids: the remedies preset
    declares quick's bases), so the full sweep trains only finetunes. Returns how many."""
    from forgetless.sweep.store import Store
    from forgetless.sweep.study import expand

    ids = {c.cell_id for c in expand(study) if not c.is_finetune}
    with Store(snapshot(src, full), readonly=True) as st:
        done = [r["cell_id"] for r in st.runs() if r["cell_id"] in ids and r["status"] == "done"]
    for cid in done:
        shutil.copytree(src / "cells" / cid, full / "cells" / cid)
    return len(done)


def seed_pruned_dir(full: Path, store_path: Path, pruned: Path, study: str) -> None:
    """<pruned>: a copy of the full sweep's store (`store_path`, its snapshot) with every finetune
    reset, and copies of the full sweep's pretraining run directories."""
    from forgetless.sweep.store import Store

    pruned.mkdir(parents=True)
    with Store(store_path, readonly=True) as st:  # a consistent copy, WAL included
        st.db.execute("VACUUM INTO ?", (str(pruned / "results.sqlite"),))
    with Store(pruned / "results.sqlite") as st:
        for r in st.runs(study):
            if r["kind"] == "finetune":
                st.reset(r["cell_id"])
                st.db.execute("UPDATE runs SET meta_json=json_remove(meta_json, '$.pruned') WHERE cell_id=?",
                              (r["cell_id"],))
            elif Path(full / "cells" / r["cell_id"]).is_dir():
                shutil.copytree(full / "cells" / r["cell_id"], pruned / "cells" / r["cell_id"])
    for extra in full.iterdir():  # tokenizer and token caches beside the store, if any
        if extra.name not in ("cells", "results.sqlite", "results.sqlite-wal", "results.sqlite-shm") \
                and extra.suffix not in (".md", ".html", ".json") \
                and extra.name not in ("figures", "probes", "memorization") \
                and not (pruned / extra.name).exists():
            (shutil.copytree if extra.is_dir() else shutil.copy)(extra, pruned / extra.name)


def simulate(store, study: str, rule) -> tuple[dict[str, int], set[tuple[str, int]]]:
    """The rule applied offline (module docstring): (run -> step it is pruned at, the (run, step)
    points a pruned sweep keeps; WiSE points, taken after training, go with a pruned run)."""
    from forgetless.sweep.prune import pareto

    runs = [r for r in store.runs(study) if r["kind"] == "finetune" and r["status"] == "done"]
    points: dict[str, list] = defaultdict(list)
    for p in store.points(study=study):
        points[p["run_id"]].append(p)
    stopped: dict[str, int] = {}
    kept: set[tuple[str, int]] = set()

    def pairs(cid: str) -> list[tuple[float, float]]:
        return [(p["forgetting"], p["learning"]) for p in points[cid]
                if (p["run_id"], p["step"]) in kept and p["step"] >= 0
                and (p.get("extra") or {}).get("wise") is None
                and np.isfinite(p["forgetting"]) and np.isfinite(p["learning"])]

    for i, r in enumerate(runs):  # store order = the study's cell order
        key = (r["base_id"], r["method"], (r.get("meta") or {}).get("task"))
        peers = [q["cell_id"] for q in runs[:i] if (q["base_id"], q["method"], (q.get("meta") or {}).get("task")) == key]
        front = pareto([pair for cid in peers for pair in pairs(cid)])
        traj = sorted((p for p in points[r["cell_id"]] if (p.get("extra") or {}).get("wise") is None),
                      key=lambda p: p["step"])
        last = max((p["step"] for p in traj), default=0)
        own, stop = [], None
        for p in traj:
            if p["step"] <= 0 or not (np.isfinite(p["forgetting"]) and np.isfinite(p["learning"])):
                continue
            own.append((p["forgetting"], p["learning"]))
            if p["step"] < last and rule.stops(own, front):
                stop = p["step"]
                break
        if stop is None:
            kept |= {(r["cell_id"], p["step"]) for p in points[r["cell_id"]]}
        else:
            stopped[r["cell_id"]] = stop
            kept |= {(r["cell_id"], p["step"]) for p in traj if p["step"] <= stop}
    return stopped, kept


def oracle_share(rows: list[dict], by: tuple[str, ...]) -> tuple[float, int]:
    """The bound no pruning rule can beat without dropping frontier points: (share of the steps
    trained when every run stops right after its last point on the final Pareto front of its
    group `by`, runs with no point on it past step 0)."""
    from forgetless.sweep.prune import pareto

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if np.isfinite(r["forgetting"]) and np.isfinite(r["learning"]):
            groups[tuple(r[k] for k in by)].append(r)
    last: dict[str, int] = defaultdict(int)
    last_on: dict[str, int] = defaultdict(int)
    for rs in groups.values():
        front = set(pareto([(r["forgetting"], r["learning"]) for r in rs]))
        for r in rs:
            last[r["run_id"]] = max(last[r["run_id"]], r["step"])
            if r["step"] > 0 and (r["forgetting"], r["learning"]) in front:
                last_on[r["run_id"]] = max(last_on[r["run_id"]], r["step"])
    return sum(last_on.values()) / max(sum(last.values()), 1), sum(1 for k in last if not last_on.get(k))


def first_rise(rows: list[dict]) -> dict:
    """Forgetting's rise from step 0 at each run's first evaluation past it: the median, and the
    share of runs within `margin` of the base there (such a point no peer can dominate by the
    margin, since no finetune forgets less than the base)."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["run_id"]].append(r)
    rises = []
    for rs in by.values():
        rs = sorted(rs, key=lambda r: r["step"])
        if len(rs) > 1 and rs[0]["step"] == 0:
            rises.append(rs[1]["forgetting"] - rs[0]["forgetting"])
    from forgetless.sweep.prune import PRUNE_MARGIN

    return {"median": float(np.median(rises)) if rises else None,
            "share_within_margin": float(np.mean(np.asarray(rises) < PRUNE_MARGIN)) if rises else None}


def judged(study) -> dict:
    """How many of the study's finetunes have a peer before them in cell order (same base, task
    and method): only those can ever be stopped, whatever the rule (a line's first run has none)."""
    from forgetless.sweep.study import expand

    seen: dict[tuple, int] = defaultdict(int)
    n = with_peer = 0
    for c in expand(study):
        if c.is_finetune:
            key = (c.base_id, c.method, c.meta.get("task"))
            n, with_peer = n + 1, with_peer + (seen[key] > 0)
            seen[key] += 1
    return {"finetunes": n, "with_a_peer_before": with_peer, "lines": len(seen)}


def grid(store_path: Path, study: str) -> list[dict]:
    """--simulate over warm-ups 1-3, margins 0 / 0.01 / 0.02 and windows all / 1 / 2."""
    from forgetless.report.tables import finetune_rows
    from forgetless.sweep.prune import PruneRule
    from forgetless.sweep.store import Store

    out = []
    with Store(store_path, readonly=True) as st:
        rows = finetune_rows(st, study)
        steps, _, _ = finetune_cost(st, study)
        for window in (None, 1, 2):
            for warmup in (1, 2, 3):
                for margin in (0.0, 0.01, 0.02):
                    stopped, kept = simulate(st, study, PruneRule(warmup=warmup, margin=margin, window=window))
                    pruned = [r for r in rows if (r["run_id"], r["step"]) in kept]
                    hv = list(hypervolume_kept(rows, pruned).values())
                    v = verdicts(rows, pruned, st, None, study, kept)
                    out.append({"window": window, "warmup": warmup, "margin": margin, "runs_pruned": len(stopped),
                                "steps_share": round(finetune_cost(st, study, stopped)[0] / max(steps, 1), 3),
                                "hv_mean": round(float(np.nanmean(hv)), 4), "hv_worst": round(float(np.nanmin(hv)), 4),
                                "changed": [k for k, x in v.items() if k != "compare" and x["changed"]]
                                + [f"compare {k}" for k, x in v.get("compare", {}).items() if x["changed"]]})
    return out


def verdicts(full_rows: list[dict], pruned_rows: list[dict], full_store, pruned_store, study: str,
             kept: set | None, only: set | None = None) -> dict:
    """Claims 2, 3, 6 on both sides; the remedies answer per panel when the study has WiSE or
    several remedies per panel (report.compare)."""
    from forgetless.report.verdicts import claim2_same_optimizer, claim3_lora
    from forgetless.report.verdicts_more import claim6_throughout

    out: dict = {}
    for claim in (claim2_same_optimizer, claim3_lora, claim6_throughout):
        a, b = claim(full_rows), claim(pruned_rows)
        out[claim.__name__] = {"full": [a.status, a.effect], "pruned": [b.status, b.effect],
                               "changed": a.status != b.status}
    from forgetless.report.compare import compare, rows_from_store

    crows = [r for r in rows_from_store(full_store, study) if only is None or r["run_id"] in only]
    prows = [r for r in crows if (r["run_id"], r["step"]) in kept] if kept is not None \
        else [r for r in rows_from_store(pruned_store, study) if only is None or r["run_id"] in only]
    if len({r["remedy"] for r in crows}) > 1:
        a = {(pc.base, pc.task): pc for pc in compare(crows)}
        b = {(pc.base, pc.task): pc for pc in compare(prows)}
        out["compare"] = {f"{k[0]} · {k[1]}": {
            "full": a[k].best, "pruned": b[k].best if k in b else None,
            "decisive_full": sorted(f"{p.a}>{p.b}:{p.decision.status}" for p in a[k].pairs if p.decision.status != "inconclusive"),
            "decisive_pruned": sorted(f"{p.a}>{p.b}:{p.decision.status}" for p in b[k].pairs if p.decision.status != "inconclusive") if k in b else None,
        } for k in a}
        for v in out["compare"].values():
            v["changed"] = v["full"] != v["pruned"] or v["decisive_full"] != v["decisive_pruned"]
    return out


def measure(study, full: Path, root: Path, rule, workers: int, simulated: bool = False,
            executor=None, run: bool = True) -> dict:
    """The figures of the module docstring for `study`, whose finished full sweep is in `full`
    (only read); the pruned sweep goes to <root>/pruned. `executor`: a stand-in trainer (tests);
    run=False: the figures of the pruned sweep already there (an interrupted one: so far)."""
    from forgetless.report.tables import finetune_rows
    from forgetless.sweep.runner import run_sweep
    from forgetless.sweep.store import Store

    pruned, store_path = root / "pruned", snapshot(full, root / "full-store")
    result: dict = {"study": study.name, "full_dir": str(full), "rule": vars(rule), "simulated": simulated}
    kept = stopped = None
    if simulated:
        with Store(store_path, readonly=True) as st:
            stopped, kept = simulate(st, study.name, rule)
    elif run:
        if pruned.exists():
            shutil.rmtree(pruned)
        seed_pruned_dir(full, store_path, pruned, study.name)
        t0 = time.time()
        result["pruned_counts"] = run_sweep(study, workers=workers, out_dir=pruned, progress=False, prune=rule,
                                            executor=executor)
        result["pruned_sweep_wall_s"] = round(time.time() - t0, 1)
        result["workers"] = workers

    rows = {}
    only = None  # an interrupted pruned sweep: both sides over the finetunes it finished
    if kept is None:
        with Store(pruned / "results.sqlite", readonly=True) as pst:
            ft = [r for r in pst.runs(study.name) if r["kind"] == "finetune"]
            finished = {r["cell_id"] for r in ft if r["status"] in ("done", "diverged")}
        if len(finished) < len(ft):
            only, result["partial"] = finished, f"{len(finished)} of {len(ft)} finetunes finished"
    with Store(store_path, readonly=True) as fst:
        steps, wall, n = finetune_cost(fst, study.name, only=only)
        result["full"] = {"finetune_steps": steps, "finetune_wall_s": round(wall, 1), "runs_pruned": n}
        rows["full"] = [r for r in finetune_rows(fst, study.name) if only is None or r["run_id"] in only]
        if kept is not None:
            steps, _, n = finetune_cost(fst, study.name, stopped)
            result["pruned"] = {"finetune_steps": steps, "runs_pruned": n}
            rows["pruned"] = [r for r in rows["full"] if (r["run_id"], r["step"]) in kept]
            result["verdicts"] = verdicts(rows["full"], rows["pruned"], fst, None, study.name, kept)
        else:
            with Store(pruned / "results.sqlite", readonly=True) as pst:
                steps, wall, n = finetune_cost(pst, study.name, only=only)
                result["pruned"] = {"finetune_steps": steps, "finetune_wall_s": round(wall, 1), "runs_pruned": n}
                rows["pruned"] = [r for r in finetune_rows(pst, study.name) if only is None or r["run_id"] in only]
                result["verdicts"] = verdicts(rows["full"], rows["pruned"], fst, pst, study.name, None, only)
    hv = hypervolume_kept(rows["full"], rows["pruned"])
    if kept is None:  # training repeats itself on CPU: a pruned run's points are the full run's (what --simulate assumes)
        full_at = {(r["run_id"], r["step"]): (r["forgetting"], r["learning"]) for r in rows["full"]}
        same = [full_at.get((r["run_id"], r["step"])) == (r["forgetting"], r["learning"]) for r in rows["pruned"]]
        result["points_equal_to_full"] = f"{sum(same)} of {len(same)}"
    result["compute_share_steps"] = result["pruned"]["finetune_steps"] / max(result["full"]["finetune_steps"], 1)
    if "finetune_wall_s" in result["pruned"]:
        result["compute_share_wall"] = result["pruned"]["finetune_wall_s"] / max(result["full"]["finetune_wall_s"], 1e-9)
    result["hypervolume_kept_mean"] = float(np.nanmean(list(hv.values()))) if hv else None
    result["hypervolume_kept_worst"] = float(np.nanmin(list(hv.values()))) if hv else None
    result["panels"] = len(hv)
    result["verdicts_changed"] = sorted(
        [k for k, v in result["verdicts"].items() if k != "compare" and v["changed"]]
        + [f"compare {k}" for k, v in result["verdicts"].get("compare", {}).items() if v["changed"]])
    result["oracle_steps_share"] = {
        "line": oracle_share(rows["full"], ("base", "task", "method")),
        "panel": oracle_share(rows["full"], ("base", "task"))}
    result["first_point_forgetting_rise"] = first_rise(rows["full"])
    result["goal_met"] = bool(hv and result["hypervolume_kept_mean"] >= 0.95 and result["compute_share_steps"] <= 0.60)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=None, help="preset name or study file (with --full: the store's study "
                                                  "name, needed only when it holds several)")
    ap.add_argument("--full", default=None, help="a finished sweep directory to take as the full side (read only)")
    ap.add_argument("--dir", default="runs/prune-bench", help="where the sweeps go")
    ap.add_argument("--warmup", type=int, default=None, help="--prune-warmup (default: the sweep's)")
    ap.add_argument("--margin", type=float, default=None, help="nats (default: the verdicts' resolution)")
    ap.add_argument("--window", type=int, default=None, help="judge only the latest N points (default: all)")
    ap.add_argument("--simulate", action="store_true", help="train nothing: the rule on the full store's points")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--figures-only", action="store_true", help="run nothing: the figures of <dir>/pruned as it is")
    ap.add_argument("--bases", default=None, help="without --full: take the study's finished pretraining cells "
                                                  "from this sweep directory (copied) before the full sweep")
    ap.add_argument("--judged", action="store_true", help="run nothing: how many of the study's finetunes "
                                                          "pruning could ever judge (a peer before them)")
    ap.add_argument("--grid", action="store_true", help="with --full: --simulate over a grid of rules, one line each")
    args = ap.parse_args()

    from forgetless.sweep.prune import PRUNE_MARGIN, PRUNE_WARMUP, PruneRule
    from forgetless.sweep.runner import default_workers, run_sweep
    from forgetless.sweep.study import load_study

    rule = PruneRule(warmup=args.warmup or PRUNE_WARMUP,
                     margin=PRUNE_MARGIN if args.margin is None else args.margin, window=args.window)
    root = Path(args.dir)
    if args.judged:
        print(json.dumps(judged(stored_study(snapshot(Path(args.full), root / "full-store"), args.study)
                                if args.full else load_study(args.study or "cpu-full"))))
        return
    workers = default_workers() if args.workers is None else args.workers
    if args.full:
        full = Path(args.full)
        study = stored_study(snapshot(full, root / "full-store"), args.study)
    else:
        if args.simulate or args.figures_only or args.grid:
            raise SystemExit("--simulate, --grid and --figures-only read a finished sweep: give it with --full DIR")
        study = load_study(args.study or "cpu-full")
        full = root / "full"
        if args.bases and not full.exists():
            print(f"{seed_bases(Path(args.bases), full, study)} finished bases copied from {args.bases}", flush=True)
        run_sweep(study, workers=workers, out_dir=full, progress=False)
    if args.grid:
        for line in grid(snapshot(full, root / "full-store"), study.name):
            print(json.dumps(line))
        return
    result = measure(study, full, root, rule, workers, args.simulate, run=not args.figures_only)
    result["command"] = " ".join(sys.argv)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
