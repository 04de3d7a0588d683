"""Cells as Ray tasks: `forgetless sweep study.yaml --backend ray [--ray-address ADDRESS]`.

Only where a cell runs changes; the runner (runner.run_sweep) keeps the dependency order, the
atomic claims in the store, the heartbeats and the once-per-invocation retry of failed cells.

- The driver (the `forgetless sweep` process) owns the store. A Ray task may run on another
  node, where the driver's SQLite file is not reachable (and SQLite on a network filesystem is
  not safe with several writers), so no task touches it: a task streams back every eval point as
  it is measured (a Ray streaming-generator task), then the cell's outcome (status, error,
  final checkpoint, the run's complete list of points), and the driver writes them. Streamed
  rather than sent at the end, so that the store is what the local runner makes of the same
  cell: `forgetless status` shows the points of running cells, a killed sweep keeps the points
  measured so far, and a resumed cell's divergence check starts from its first point in the store.
- The divergence check runs in the task (cell.execute_cell, shared with the local workers), so a
  diverging run stops where it runs.
- Run directories `<out_dir>/cells/<cell id>` are written by the nodes that run the cells, and a
  finetune reads its base cell's directory: out_dir must be on a filesystem that every node
  mounts at the same path. forgetless (and torch) must be installed on every node.
- Every cell gets a fresh worker process (max_calls=1), so its memory and CUDA context go with it,
  and Ray does not retry it (max_retries=0): a cell whose task dies (node lost, out of memory) is
  recorded failed and retried by the next invocation, as locally. Ray ends the tasks of a driver
  that dies, so a killed sweep leaves no training behind; its cells are resumed by the next one.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from forgetless.sweep.cell import execute_cell, failed, first_loss, record_outcome
from forgetless.sweep.records import Cell
from forgetless.sweep.store import Store

INSTALL_HINT = "pip install 'forgetless[ray]'"


class RayBackendError(RuntimeError):
    """Ray is missing, or the cluster cannot be reached or cannot run a cell."""


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise RayBackendError(f"--backend ray needs the ray package: {INSTALL_HINT}") from err
    return ray


def _cell_task(cell: Cell, cell_dir: str, base_dir: str | None, start_loss: float | None,
               executor: Callable | None, threads: int):
    """The Ray task: yields ("point", point) per eval point, then ("outcome", outcome).

    The executor reports points through a callback, so it runs in a thread and hands them to this
    generator through a queue.
    """
    os.environ["FORGETLESS_WORKER_THREADS"] = str(threads)  # torch threads = the cell's CPUs
    inbox: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            outcome = execute_cell(cell, cell_dir, base_dir, start_loss,
                                   lambda point: inbox.put(("point", dict(point))), executor)
        except BaseException as err:  # execute_cell records training problems; this is the rest
            outcome = failed(err)
        inbox.put(("outcome", outcome))

    threading.Thread(target=work, daemon=True).start()
    while True:
        kind, payload = inbox.get()
        yield kind, payload
        if kind == "outcome":
            return


def _check_reachable(address: str | None) -> None:
    """Ray retries an address where nothing listens for minutes; one TCP connect says so now."""
    if not address or address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        raise RayBackendError(
            f"{address} (--ray-address / RAY_ADDRESS) is a Ray Client address, and Ray Client "
            "cannot stream a cell's points back; run `forgetless sweep` on a node of the cluster "
            "with --ray-address auto (or HEAD:6379), e.g. through `ray job submit -- forgetless "
            "sweep ...`")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # not HOST:PORT: Ray judges it
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise RayBackendError(
            f"no Ray cluster answers at {address} (--ray-address / RAY_ADDRESS): {err}; start one "
            "with `ray start --head` there, or leave the address out for a local instance") from err


class RayBackend:
    """Run each claimed cell as a Ray task needing `cpus_per_cell` CPUs and `gpus_per_cell` GPUs.

    address: a Ray cluster ("HOST:PORT", "auto"; not a Ray Client "ray://" address, which cannot
    stream results); None: $RAY_ADDRESS, else a
    cluster started with `ray start` on this machine, else a new local instance (Ray's own
    rule). When Ray is already initialised in this process, that connection is used as it is.
    gpus_per_cell: None is 1 when the cluster has GPUs, else 0; fractions share a GPU.
    max_in_flight: cells submitted at once; None: as many as the cluster's CPUs and GPUs hold
    (looked at again every minute, for clusters that grow).
    """

    def __init__(self, address: str | None = None, gpus_per_cell: float | None = None,
                 cpus_per_cell: float = 1.0, max_in_flight: int | None = None):
        if not cpus_per_cell > 0:
            raise ValueError(f"cpus_per_cell (--cpus-per-cell) must be > 0; got {cpus_per_cell}")
        if gpus_per_cell is not None and not gpus_per_cell >= 0:
            raise ValueError(f"gpus_per_cell (--gpus-per-cell) must be >= 0; got {gpus_per_cell}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1; got {max_in_flight}")
        self.ray = _import_ray()  # before any work: a missing extra is said at once
        self.address = address
        self.gpus_per_cell, self.cpus_per_cell = gpus_per_cell, float(cpus_per_cell)
        self.max_in_flight = max_in_flight
        self.flight: dict = {}  # ObjectRefGenerator -> cell id
        self._own_ray = False
        self._fits, self._fits_at = 1, 0.0

    # -------------------------------------------------------------- backend protocol (runner)
    def start(self, db_path: Path, executor: Callable | None) -> str:
        ray = self.ray
        if not ray.is_initialized():
            _check_reachable(self.address or os.environ.get("RAY_ADDRESS"))
            try:
                ray.init(address=self.address)
            except Exception as err:
                where = self.address or os.environ.get("RAY_ADDRESS") or "a new local instance"
                raise RayBackendError(f"could not start or reach Ray at {where} "
                                      f"(--ray-address / RAY_ADDRESS): {err}") from err
            self._own_ray = True
        total = ray.cluster_resources()
        if self.gpus_per_cell is None:
            self.gpus_per_cell = 1.0 if total.get("GPU", 0) >= 1 else 0.0
        self.executor = executor
        self.task = ray.remote(num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell,
                               num_returns="streaming", max_calls=1, max_retries=0)(_cell_task)
        fits = self.capacity()
        line = (f"Ray: {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs; "
                f"each cell takes {self.cpus_per_cell:g} CPU and {self.gpus_per_cell:g} GPU; "
                f"{fits} cell(s) at once")
        if self._cells_that_fit(total) == 0:
            line += (" (the cluster has too few resources for one cell now; the cell waits for "
                     "Ray to add them, or lower --gpus-per-cell / --cpus-per-cell)")
        return line

    def capacity(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        if time.time() - self._fits_at > 60:
            self._fits = max(1, self._cells_that_fit(self.ray.cluster_resources()))
            self._fits_at = time.time()
        return self._fits

    def running(self) -> list[str]:
        return list(self.flight.values())

    def submit(self, store: Store, cell: Cell, cell_dir: str, base_dir: str | None) -> None:
        cid = cell.cell_id
        store.set_out_dir(cid, cell_dir)
        threads = max(1, int(self.cpus_per_cell))
        gen = self.task.remote(cell, cell_dir, base_dir, first_loss(store, cell), self.executor,
                               threads)
        self.flight[gen] = cid

    def wait(self, store: Store, timeout: float) -> None:
        """Write every point and outcome that has come back; wait up to `timeout` for one."""
        ray = self.ray
        if not self.flight:
            time.sleep(timeout)
            return
        ray.wait(list(self.flight), num_returns=1, timeout=timeout)
        for gen, cid in list(self.flight.items()):
            try:
                while gen.next_ready():
                    kind, payload = ray.get(next(gen))
                    if kind == "point":
                        store.add_point(cid, payload)
                        continue
                    record_outcome(store, cid, payload)
                    del self.flight[gen]
                    break
                else:
                    if gen.is_finished():  # ended without an outcome: not expected, but final
                        raise RuntimeError("the task ended without reporting an outcome")
            except Exception as err:  # the task itself died: worker killed, node lost, cancelled
                store.finish(cid, "failed", error=f"Ray task died: {type(err).__name__}: {err}")
                self.flight.pop(gen, None)

    def stop(self, cancel: bool = False) -> None:
        if cancel:
            for gen in self.flight:
                try:
                    self.ray.cancel(gen, force=True)
                except Exception:  # already finished or gone: nothing left to stop
                    pass
        self.flight.clear()
        if self._own_ray:
            self.ray.shutdown()
            self._own_ray = False

    # -------------------------------------------------------------- helpers
    def _cells_that_fit(self, total: dict) -> int:
        fits = [total.get("CPU", 0) / self.cpus_per_cell]
        if self.gpus_per_cell:
            fits.append(total.get("GPU", 0) / self.gpus_per_cell)
        return int(min(fits) + 1e-9)
