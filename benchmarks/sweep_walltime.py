"""Sweep wall time with 1 worker against 2 workers, and the share of wall time spent evaluating.

    .venv/bin/python benchmarks/sweep_walltime.py                 # part of `quick`, 1 then 2 workers
    .venv/bin/python benchmarks/sweep_walltime.py --study quick   # the whole preset
    .venv/bin/python benchmarks/sweep_walltime.py --study cpu-full --workers 1 2 4

The default study is the `quick` preset cut to one base: its AdamW pretraining run and its first
finetuning grid on that base (full AdamW and Muon at two learning rates: 5 cells), with the
preset's own settings and eval interval.

Each configuration runs the whole study from scratch in its own directory (the tokenizer and
token shards are prepared once beforehand, outside the timings, as a second `forgetless sweep`
would find them cached). The evaluation share is measured directly: every cell runs through the
normal training executor with its `evaluate` wrapped by a timer, so

    eval share = sum over cells of seconds inside evaluate / sum over cells of cell wall time

(target: <= 15% at the preset's eval interval). Cells run in worker processes exactly as in
`forgetless sweep`; only the timer is added.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def timed_executor(cell, out_dir, base_dir, on_eval):
    """The default train executor, with the seconds spent in evaluation written beside the run."""
    import importlib

    from forgetless.sweep.execute import train_executor

    # The modules (forgetless.train re-exports functions of the same names over them).
    ft = importlib.import_module("forgetless.train.finetune")
    pt = importlib.import_module("forgetless.train.pretrain")

    spent = {"eval_s": 0.0, "evals": 0}
    start = time.perf_counter()

    def wrap(run_job):
        def timed(job):
            evaluate = job.evaluate

            def timed_evaluate():
                t = time.perf_counter()
                out = evaluate()
                spent["eval_s"] += time.perf_counter() - t
                spent["evals"] += 1
                return out

            job.evaluate = timed_evaluate
            return run_job(job)

        return timed

    originals = ft.run_job, pt.run_job
    ft.run_job, pt.run_job = wrap(originals[0]), wrap(originals[1])
    try:
        return train_executor(cell, out_dir, base_dir, on_eval)
    finally:
        ft.run_job, pt.run_job = originals
        spent["cell_s"] = time.perf_counter() - start
        spent["kind"] = cell["kind"]
        (Path(out_dir) / "eval_time.json").write_text(json.dumps(spent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default=None, help="a study file or preset (default: part of quick)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", default=None, help="keep the sweep directories under this folder")
    args = ap.parse_args()

    from forgetless.data import prepare_pretraining_data
    from forgetless.sweep.execute import check_study
    from forgetless.sweep.runner import cpu_cores, run_sweep
    from forgetless.sweep.study import expand, load_study

    if args.study:
        study = load_study(args.study)
    else:  # the quick preset cut to its AdamW base and first grid
        raw = load_study("quick").model_dump(mode="json")
        raw["name"] = "quick-adamw"
        raw["pretrain"] = [p for p in raw["pretrain"] if p["name"] == "adamw"]
        raw["finetune"] = [{**raw["finetune"][0], "bases": ["adamw"]}]
        study = load_study(raw)
    check_study(study)
    prepare_pretraining_data(study.data.corpus, study.data.tokenizer, study.data.vocab_size, progress=False)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    print(f"study {study.name}: {len(expand(study))} cells, {cpu_cores()} cores")
    print(f"{'workers':>7} {'threads/worker':>14} {'wall s':>8} {'cells done':>10} {'eval share':>10} "
          f"{'eval share (finetune)':>21}")
    for w in args.workers:
        out = root / f"workers-{w}"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        counts = run_sweep(study, workers=w, out_dir=out, executor=timed_executor, progress=False,
                           log=lambda _m: None)
        wall = time.perf_counter() - t
        recs = [json.loads(p.read_text()) for p in out.glob("cells/*/eval_time.json")]
        share = sum(r["eval_s"] for r in recs) / max(sum(r["cell_s"] for r in recs), 1e-9)
        ft = [r for r in recs if r["kind"] == "finetune"]
        ft_share = sum(r["eval_s"] for r in ft) / max(sum(r["cell_s"] for r in ft), 1e-9)
        print(f"{w:>7} {max(1, cpu_cores() // w):>14} {wall:>8.1f} {counts.get('done', 0):>10} "
              f"{share:>10.1%} {ft_share:>21.1%}", flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
