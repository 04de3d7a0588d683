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

A cell executor is `executor(cell, out_dir, base_dir, on_eval) -> result` (cell: a records.Cell; base_dir: the run
directory of the cell's base, None for an outside checkpoint) with `result.status` ("done" |
"diverged"), `result.points` (list of dicts) and `result.final_checkpoint`; the default runs
`forgetless.train` (see `execute.py`).

Where cells run is a backend: LocalBackend (the process pool above, the default) or
ray_backend.RayBackend (Ray tasks, on this machine or a cluster); everything listed above except
the worker pool is the runner's own and the same for both.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from forgetless.sweep.cell import execute_cell, first_loss, record_outcome
from forgetless.sweep.execute import check_study
from forgetless.sweep.prune import Pruner, PruneRule
from forgetless.sweep.ray_backend import RayBackend
from forgetless.sweep.records import Cell
from forgetless.sweep.store import TERMINAL, Store, owner_gone, owner_id
from forgetless.sweep.study import Study, expand

STORE_NAME = "results.sqlite"


def store_path(study: Study, out_dir: str | Path | None = None) -> Path:
    return Path(out_dir or study.resolved_out_dir()) / STORE_NAME


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per GPU; on CPU one per core, each with one thread: small models gain little
    from intra-op threads, and independent cells parallelise perfectly."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, cpu_cores())


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


def run_cell(db_path: str, cell: Cell, cell_dir: str, base_dir: str | None,
             executor: Callable | None = None, prune: PruneRule | None = None) -> str:
    """Run one claimed cell in this process and record everything in the store; returns the
    final status. Never raises for a training problem: divergence and errors are recorded.
    prune: stop a finetune dominated by its finished peers (sweep.prune)."""
    store = Store(db_path)
    should_stop = Pruner(store, cell, prune) if prune is not None and cell.is_finetune else None
    cid = cell.cell_id
    start_loss = first_loss(store, cell)
    store.set_out_dir(cid, cell_dir)
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(db_path, cid, stop), daemon=True)
    beat.start()
    try:
        outcome = execute_cell(cell, cell_dir, base_dir, start_loss,
                               lambda point: store.add_point(cid, point), executor, should_stop)
        record_outcome(store, cid, outcome)
    finally:
        stop.set()
    store.close()
    return outcome.status


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


class Backend(Protocol):
    """Where cells run: what run_sweep asks to run a claimed cell. The order, the claims,
    heartbeats and retries stay in run_sweep. LocalBackend (below) and ray_backend.RayBackend are
    the two there are."""

    def start(self, db_path: Path, executor: Callable | None) -> str:
        """Get ready before any work; a line to print, or ""."""
        ...

    def capacity(self) -> int:
        """How many cells may run at once."""
        ...

    def running(self) -> list[str]:
        """The cell ids in flight."""
        ...

    def submit(self, store: Store, cell: Cell, cell_dir: str, base_dir: str | None) -> None: ...

    def wait(self, store: Store, timeout: float) -> None:
        """Return when a cell may have finished; record cells whose worker died."""
        ...

    def stop(self, cancel: bool = False) -> None: ...


class LocalBackend:
    """The default Backend: a pool of `workers` spawned processes on this machine, each writing
    its cell's records into the store itself (run_cell)."""

    def __init__(self, workers: int = 1, prune: PruneRule | None = None):
        if workers < 0:
            raise ValueError(f"workers must be >= 0; got {workers}")
        self.workers, self.prune = workers, prune
        self.in_flight: dict[cf.Future, str] = {}

    def start(self, db_path: Path, executor: Callable | None) -> str:
        self.db_path, self.executor = str(db_path), executor
        self.gpus = _visible_gpus() if executor is None and self.workers > 1 else []
        self.pool = _new_pool(self.workers, self.gpus)
        return ""

    def capacity(self) -> int:
        return max(self.workers, 1)

    def running(self) -> list[str]:
        return list(self.in_flight.values())

    def submit(self, store: Store, cell: Cell, cell_dir: str, base_dir: str | None) -> None:
        fut = self.pool.submit(run_cell, self.db_path, cell, cell_dir, base_dir, self.executor, self.prune)
        self.in_flight[fut] = cell.cell_id

    def wait(self, store: Store, timeout: float) -> None:
        done, _ = cf.wait(list(self.in_flight), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            cid = self.in_flight.pop(fut, None)
            if cid is None:  # already recorded below, with the rest of a broken pool
                continue
            err = fut.exception()
            if err is not None:  # the worker itself died (killed, out of memory)
                store.finish(cid, "failed", error=f"worker process died: {type(err).__name__}: {err}")
                if isinstance(err, cf.process.BrokenProcessPool):
                    for other, ocid in list(self.in_flight.items()):
                        store.finish(ocid, "failed", error="worker pool broke while this cell ran")
                        self.in_flight.pop(other)
                    self.pool = _new_pool(self.workers, self.gpus)

    def stop(self, cancel: bool = False) -> None:
        if cancel:
            self.pool.shutdown(wait=False, cancel_futures=True)
        else:
            self.pool.shutdown(wait=True)
        self.in_flight.clear()


BACKENDS = ("local", "ray")


def make_backend(backend: str | Backend, workers: int = 1, prune: PruneRule | None = None) -> Backend:
    """A backend object from its name ("local": a pool of `workers`; "ray": RayBackend with its
    defaults); a backend object is returned as it is. Pruning is the local backend's (its workers
    read the store; Ray tasks do not)."""
    if prune is not None and not (backend == "local" or isinstance(backend, LocalBackend)):
        from forgetless.errors import UserError

        raise UserError("--prune works with --backend local only (Ray tasks do not read the store): run the "
                        "sweep with --backend local (the default), or on Ray without --prune")
    if isinstance(backend, LocalBackend) and prune is not None:
        backend.prune = prune
    if not isinstance(backend, str):
        return backend
    if backend == "local":
        return LocalBackend(workers, prune)
    if backend == "ray":
        return RayBackend()
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def run_sweep(study: Study, *, workers: int = 1, out_dir: str | Path | None = None,
              executor: Callable | None = None, progress: bool = True, poll: float = 0.5,
              stale_after: float = 600.0, heartbeat_every: float = 10.0,
              log: Callable[[str], None] | None = None, backend="local",
              prune: PruneRule | None = None) -> dict[str, int]:
    """Run (or resume) every cell of `study`; returns the count of cells per final status.

    workers: processes running cells at once (0: in this process); torch threads per worker are
    cores // workers (local backend). executor: see the module docstring (tests inject a small
    one). backend: "local", "ray" or a backend object (LocalBackend, ray_backend.RayBackend).
    prune: stop finetunes dominated by finished ones (sweep.prune); they count as "pruned".
    """
    backend = make_backend(backend, workers, prune)
    if executor is None:  # refuse a study the training box would refuse, before any work
        check_study(study)
    root = Path(out_dir or study.resolved_out_dir())
    db_path = root / STORE_NAME
    cells = expand(study)
    by_id = {c.cell_id: c for c in cells}
    order = list(by_id)
    started = backend.start(db_path, executor)  # a pool, or Ray: refused before the store is made
    try:
        store = Store(db_path)
    except BaseException:  # a store that cannot be opened (StoreError): no pool left behind
        backend.stop(cancel=True)
        raise
    store.add_study(study.name, study.model_dump(mode="json"), cells)
    store.requeue_failed(order)
    owner = owner_id()

    from tqdm.auto import tqdm

    statuses = {cid: r["status"] for cid, r in store.runs_by_id(study.name).items()}
    seen_final = {cid for cid in order if statuses[cid] in TERMINAL}
    bar = tqdm(total=len(order), initial=len(seen_final), desc=f"sweep {study.name}", unit="cell",
               disable=not progress, dynamic_ncols=True)
    say = log or (tqdm.write if progress else (lambda m: print(m, flush=True)))  # each finished cell, always
    if started:
        say(started)
    if seen_final:
        say(f"{len(seen_final)} of {len(order)} cells already finished; skipping them")

    last_beat = time.time()
    try:
        while True:
            rows = store.runs_by_id(study.name)
            for cid in order:  # report cells that reached a final status since the last look
                row = rows[cid]
                if row["status"] in TERMINAL and cid not in seen_final:
                    seen_final.add(cid)
                    bar.update(1)
                    say(_finished_line(row))
            if len(seen_final) == len(order):
                break
            busy, capacity = set(backend.running()), backend.capacity()
            for cid in order:
                if len(busy) >= capacity:
                    break
                row = rows[cid]
                if cid in busy or row["status"] in TERMINAL:
                    continue
                if row["status"] == "running" and not owner_gone(row["owner"], row["heartbeat"], stale_after):
                    continue  # another live runner has it
                base = by_id[cid].base_id
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
                backend.submit(store, by_id[cid], cell_dir, base_dir)
                busy.add(cid)
            if not busy:
                time.sleep(poll)  # others are running what is left, or bases are in progress
                continue
            backend.wait(store, poll)
            if time.time() - last_beat > heartbeat_every:
                store.heartbeat(backend.running(), owner)
                last_beat = time.time()
    except BaseException:
        # Interrupted (Ctrl-C): let go of our cells so the next run resumes them at once.
        ours = backend.running()
        backend.stop(cancel=True)
        store.release(ours, owner)
        raise
    finally:
        bar.close()
    backend.stop()
    counts: dict[str, int] = {}
    for r in store.runs(study.name):
        status = "pruned" if (r.get("meta") or {}).get("pruned") else r["status"]
        counts[status] = counts.get(status, 0) + 1
    store.close()
    return counts


def _finished_line(row: dict) -> str:
    took = ""
    if row.get("started_at") and row.get("finished_at"):
        took = f" in {row['finished_at'] - row['started_at']:.0f}s"
    pruned = (row.get("meta") or {}).get("pruned")
    line = f"{'pruned' if pruned else row['status']:>8}  {row['label']}{took}"
    if pruned:
        line += f"  ({pruned})"
    if row["status"] in ("failed", "diverged") and row.get("error"):
        line += f"  ({row['error'].splitlines()[0]})"
    return line
