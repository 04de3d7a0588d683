"""The sweep runner: every cell of a study, in dependency order, in a pool of worker processes.

What makes it safe to kill at any moment (SIGKILL included) and to start twice:
- the store is the only shared state; a cell is taken with an atomic claim (pending -> running,
  owner "host:pid" of the runner), so two runners never take the same cell;
- a cell left "running" by a runner that is gone (dead pid on this host, or a heartbeat older than
  `stale_after` on another host) is claimed again and resumed from its last checkpoint by the
  training box (resume=True on the same run directory); points are keyed by (run, step), so steps
  evaluated twice are replaced, not duplicated;
- workers watch their parent and exit when it dies, so a killed runner leaves no orphan training;
- finished cells (done, diverged) are skipped; failed cells are retried once per invocation.

A cell executor is `executor(cell, out_dir, base_dir, on_eval) -> result` (base_dir: the run
directory of the cell's base, None for an outside checkpoint) with `result.status` ("done" |
"diverged"), `result.points` (list of dicts) and `result.final_checkpoint`; the default runs
`forgetless.train` (see `execute.py`).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from forgetless.sweep.store import TERMINAL, Store, _owner_gone, owner_id
from forgetless.sweep.study import Study, expand

STORE_NAME = "results.sqlite"


class Diverged(Exception):
    """Raised from on_eval when the optimised loss leaves its range; the cell is marked diverged."""


def store_path(study: Study, out_dir: str | Path | None = None) -> Path:
    return Path(out_dir or study.resolved_out_dir()) / STORE_NAME


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------- worker side


def _worker_init(threads: int, parent: int, counter, gpus: list[str]) -> None:
    """Die with the runner; size torch's thread pool so workers x threads = cores; give each
    worker its own GPU when there are several (worker k gets GPU k mod n).

    torch reads OMP_NUM_THREADS when it is first imported (by the executor, not here: a worker
    that never trains never pays for importing torch).
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["FORGETLESS_WORKER_THREADS"] = str(threads)
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    if len(gpus) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]

    def watch() -> None:
        while True:
            if os.getppid() != parent:  # re-parented: the runner is gone
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _loss_of(cell: dict, point: dict) -> float | None:
    """The loss a run optimises: task loss for a finetune, held-out pretraining loss otherwise."""
    value = point.get("learning") if cell["kind"] == "finetune" else point.get("forgetting")
    return None if value is None else float(value)


def run_cell(db_path: str, cell: dict, cell_dir: str, base_dir: str | None,
             executor: Callable | None = None) -> str:
    """Run one claimed cell and record everything in the store; returns the final status.

    Never raises for a training problem: divergence and errors are recorded on the cell.
    """
    store = Store(db_path)
    cid = cell["cell_id"]
    factor = float(cell["config"].get("divergence_factor", 4.0))
    earlier = store.points(run_id=cid)  # from an interrupted attempt: the start stays the start
    start = {"loss": _loss_of(cell, earlier[0]) if earlier else None}

    def on_eval(point: dict) -> None:
        store.add_point(cid, point)
        loss = _loss_of(cell, point)
        if loss is None:
            return
        if start["loss"] is None:
            start["loss"] = loss
        elif not abs(loss) < float("inf") or loss > factor * start["loss"]:
            raise Diverged(f"loss {loss:.4g} at step {point['step']} is above {factor:g} x its "
                           f"start {start['loss']:.4g} (divergence_factor)")

    if executor is None:
        from forgetless.sweep.execute import train_executor as executor
    store.set_out_dir(cid, cell_dir)
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(db_path, cid, stop), daemon=True)
    beat.start()
    try:
        result = executor(cell, Path(cell_dir), base_dir, on_eval)
        if result.points:
            store.add_points(cid, list(result.points))  # the run's own record is the complete one
        status = "diverged" if result.status == "diverged" else "done"
        checkpoint = str(result.final_checkpoint) if result.final_checkpoint else None
        error = _divergence_reason(Path(cell_dir)) if status == "diverged" else None
        store.finish(cid, status, error=error, checkpoint=checkpoint)
    except Diverged as err:
        status = "diverged"
        store.finish(cid, status, error=str(err))
    except Exception as err:  # recorded, and the sweep goes on
        status = "failed"
        tb = traceback.format_exc(limit=6)
        store.finish(cid, status, error=f"{type(err).__name__}: {err}\n{tb}")
    finally:
        stop.set()
    store.close()
    return status


def _divergence_reason(cell_dir: Path) -> str:
    """The training box's own words (status.json), else a generic line."""
    try:
        return str(json.loads((cell_dir / "status.json").read_text())["reason"])
    except (OSError, ValueError, KeyError):
        return "the training loss became NaN/inf or left its range"


def _beat(db_path: str, cid: str, stop: threading.Event, every: float = 10.0) -> None:
    """Keep the cell's heartbeat fresh while it runs (long cells, runners on other hosts)."""
    store = Store(db_path)
    while not stop.wait(every):
        store.beat(cid)
    store.close()


# ---------------------------------------------------------------------- runner side


class _Inline:
    """A pool of zero processes: runs cells in the runner itself (workers=0, for debugging)."""

    def submit(self, fn, *args):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except Exception as err:  # handed to the caller through the future, as a pool does
            fut.set_exception(err)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _visible_gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES, else all that torch sees)."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [g for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _new_pool(workers: int, gpus: list[str]):
    if workers == 0:
        return _Inline()
    threads = max(1, cpu_cores() // workers)
    ctx = mp.get_context("spawn")  # never fork a process that may hold torch threads or CUDA
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                  initargs=(threads, os.getpid(), ctx.Value("i", 0), gpus))


def run_sweep(study: Study, *, workers: int = 1, out_dir: str | Path | None = None,
              executor: Callable | None = None, progress: bool = True, poll: float = 0.5,
              stale_after: float = 600.0, heartbeat_every: float = 10.0,
              log: Callable[[str], None] | None = None) -> dict[str, int]:
    """Run (or resume) every cell of `study`; returns the count of cells per final status.

    workers: processes running cells at once (0: in this process); torch threads per worker are
    cores // workers. executor: see the module docstring (tests inject a small one).
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0; got {workers}")
    if executor is None:  # refuse a study the training box would refuse, before any work
        from forgetless.sweep.execute import check_study

        check_study(study)
    root = Path(out_dir or study.resolved_out_dir())
    db_path = root / STORE_NAME
    cells = expand(study)
    order = [c["cell_id"] for c in cells]
    by_id = {c["cell_id"]: c for c in cells}
    store = Store(db_path)
    store.add_study(study.name, study.model_dump(mode="json"), cells)
    store.requeue_failed(order)
    owner = owner_id()

    from tqdm.auto import tqdm

    statuses = {r["cell_id"]: r["status"] for r in store.runs(study.name)}
    seen_final = {cid for cid in order if statuses[cid] in TERMINAL}
    bar = tqdm(total=len(order), initial=len(seen_final), desc=f"sweep {study.name}", unit="cell",
               disable=not progress, dynamic_ncols=True)
    say = log or (tqdm.write if progress else (lambda _m: None))
    if seen_final:
        say(f"{len(seen_final)} of {len(order)} cells already finished; skipping them")

    gpus = _visible_gpus() if executor is None and workers > 1 else []
    pool = _new_pool(workers, gpus)
    capacity = max(workers, 1)
    in_flight: dict[cf.Future, str] = {}
    last_beat = time.time()
    try:
        while True:
            rows = {r["cell_id"]: r for r in store.runs(study.name)}
            for cid in order:  # report cells that reached a final status since the last look
                row = rows[cid]
                if row["status"] in TERMINAL and cid not in seen_final:
                    seen_final.add(cid)
                    bar.update(1)
                    say(_finished_line(row))
            if len(seen_final) == len(order):
                break
            for cid in order:
                if len(in_flight) >= capacity:
                    break
                row = rows[cid]
                if cid in in_flight.values() or row["status"] in TERMINAL:
                    continue
                if row["status"] == "running" and not _owner_gone(row["owner"], row["heartbeat"], stale_after):
                    continue  # another live runner has it
                base = by_id[cid]["base_id"]
                base_row = rows.get(base) if base else None
                if base_row is not None and base_row["status"] in ("diverged", "failed"):
                    if store.claim(cid, owner, stale_after):
                        store.finish(cid, "failed", error=f"base {base_row['label']} {base_row['status']}; not run")
                    continue
                if base_row is not None and base_row["status"] != "done":
                    continue  # waits for its base
                if not store.claim(cid, owner, stale_after):
                    continue  # another runner has it
                cell_dir = str(root / "cells" / cid)
                base_dir = base_row["out_dir"] if base_row is not None else None
                fut = pool.submit(run_cell, str(db_path), by_id[cid], cell_dir, base_dir, executor)
                in_flight[fut] = cid
            if not in_flight:
                time.sleep(poll)  # others are running what is left, or bases are in progress
                continue
            done, _ = cf.wait(list(in_flight), timeout=poll, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                cid = in_flight.pop(fut)
                err = fut.exception()
                if err is not None:  # the worker itself died (killed, out of memory)
                    store.finish(cid, "failed", error=f"worker process died: {type(err).__name__}: {err}")
                    if isinstance(err, cf.process.BrokenProcessPool):
                        for other, ocid in list(in_flight.items()):
                            store.finish(ocid, "failed", error="worker pool broke while this cell ran")
                            in_flight.pop(other)
                        pool = _new_pool(workers, gpus)
            if time.time() - last_beat > heartbeat_every:
                store.heartbeat(in_flight.values(), owner)
                last_beat = time.time()
    except BaseException:
        # Interrupted (Ctrl-C): let go of our cells so the next run resumes them at once.
        pool.shutdown(wait=False, cancel_futures=True)
        store.release(list(in_flight.values()), owner)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    counts: dict[str, int] = {}
    for r in store.runs(study.name):
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    store.close()
    return counts


def _finished_line(row: dict) -> str:
    took = ""
    if row.get("started_at") and row.get("finished_at"):
        took = f" in {row['finished_at'] - row['started_at']:.0f}s"
    line = f"{row['status']:>8}  {row['label']}{took}"
    if row["status"] in ("failed", "diverged") and row.get("error"):
        line += f"  ({row['error'].splitlines()[0]})"
    return line
