"""The results store: one SQLite file per sweep directory, safe with several writing processes.

SQLite in WAL mode lets readers run beside one writer; every record is written in its own short
transaction (`BEGIN IMMEDIATE`, so a writer takes the lock up front instead of failing half way),
and a busy timeout makes concurrent writers wait for each other instead of erroring. A process
killed at any moment therefore leaves every record either fully written or absent.

Schema (version 1; `meta.schema_version`):

    meta(key TEXT PK, value TEXT)                 schema_version, created_at, forgetless_version
    studies(name TEXT PK, spec_json, created_at)  the study file as resolved when last run
    study_cells(study, cell_id)                   which cells a study contains (cells are shared)
    runs(cell_id TEXT PK,                         sha256 of the resolved config (first 16 hex)
         kind 'pretrain'|'finetune', base_id NULL, label, method NULL, lr NULL,
         config_json,                             the resolved cell config (sorted keys)
         meta_json,                               labels: base, base_optimizer, task, method, seed;
                                                  pruned (why --prune stopped a done run)
         status 'pending'|'running'|'done'|'diverged'|'failed', error NULL,
         owner NULL ('host:pid' of the claiming runner), heartbeat NULL, attempts,
         out_dir NULL, checkpoint NULL, created_at, started_at NULL, finished_at NULL)
    points(run_id, step, tokens, forgetting, learning NULL, accuracy NULL, wall_time,
           sources_json NULL (forgetting per held-out source), extra_json NULL,
           PK (run_id, step))                     an eval point; re-evaluating a step replaces it

Times are seconds since the epoch. A store written by a newer forgetless (higher
schema_version) is refused with a message instead of being modified. Export: export.py.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

from forgetless import __version__, metrics
from forgetless.sweep.records import Cell, EvalPoint, Run
from forgetless.sweep.rows import (
    StoreError,
    StoreVersionError,
    check_version,
    connect_readonly,
    json_field,
    run_row,
    stored_path,
)

__all__ = ["Store", "StoreError", "StoreVersionError", "owner_gone", "owner_id"]

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "diverged", "failed")
TERMINAL = ("done", "diverged", "failed")
MEASURED = metrics.columns()  # forgetting, learning, accuracy: the metrics with a column (schema v1)
POINT_COLUMNS = ("step", "tokens", *MEASURED, "wall_time")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY, spec_json TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    cell_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('pretrain', 'finetune')),
    base_id TEXT,
    label TEXT NOT NULL,
    method TEXT,
    lr REAL,
    config_json TEXT NOT NULL,
    meta_json TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed')),
    error TEXT,
    owner TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    out_dir TEXT,
    checkpoint TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL);
CREATE TABLE IF NOT EXISTS study_cells (
    study TEXT NOT NULL REFERENCES studies(name),
    cell_id TEXT NOT NULL REFERENCES runs(cell_id),
    PRIMARY KEY (study, cell_id));
CREATE TABLE IF NOT EXISTS points (
    run_id TEXT NOT NULL REFERENCES runs(cell_id),
    step INTEGER NOT NULL,
    tokens INTEGER,
    forgetting REAL,
    learning REAL,
    accuracy REAL,
    wall_time REAL,
    sources_json TEXT,
    extra_json TEXT,
    PRIMARY KEY (run_id, step));
"""


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _num(value) -> float | None:
    """A float for SQLite (which keeps inf but stores NaN as NULL; reads give NaN back)."""
    if value is None:
        return None
    return float(value)


class Store:
    """A connection to `path` (created with the current schema when missing).

    One Store per process: SQLite connections must not cross a fork, so worker processes open
    their own from the path.
    """

    def __init__(self, path: str | Path, timeout: float = 60.0, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self._open_readonly(timeout)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"{self.path.parent}: cannot create the sweep directory ({err.strerror}); "
                             "choose a writable directory with --out") from None
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path} is not a file; move it away or choose another --out")
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per record.
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: cannot open the results store ({err}); choose a writable "
                             "directory with --out") from None
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            deadline = time.monotonic() + timeout
            while True:  # switching to WAL can answer "locked" at once, without the busy handler,
                try:     # while another runner creates the same store: retry to the timeout
                    self._prepare()
                    break
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except sqlite3.DatabaseError as err:  # junk, another program's database, unreadable, read-only
            self.db.close()
            raise StoreError(f"{self.path} is not a usable forgetless results store ({err}); the file "
                             "was not modified: move it away or choose another --out") from None
        except BaseException:
            self.db.close()
            raise

    def _open_readonly(self, timeout: float) -> None:
        """For the reading commands (status, frontier, export, compare, report): see
        rows.connect_readonly; nothing is written, a damaged store is reported, not repaired."""
        self.db = connect_readonly(self.path, timeout)
        try:
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = sorted({"meta", "studies", "runs", "study_cells", "points"} - tables)
            if missing:
                raise sqlite3.DatabaseError(f"no table {', '.join(missing)}")
            self._check_version()
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise StoreError(f"{self.path} is not a usable forgetless results store ({err}); the file "
                             "was not modified") from None
        except BaseException:
            self.db.close()
            raise

    def _check_version(self) -> None:
        check_version(self.db, self.path, SCHEMA_VERSION)

    # ------------------------------------------------------------------ where runs live
    def _stored_path(self, path: str | Path | None) -> str | None:
        return stored_path(self.path.parent, path)

    def _row(self, row: sqlite3.Row) -> dict:
        return run_row(row, self.path.parent)

    # ------------------------------------------------------------------ plumbing
    def _tx(self, sql: str, args: Iterable = ()) -> sqlite3.Cursor:
        """Run one statement as its own write transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(sql, tuple(args))
            self.db.execute("COMMIT")
            return cur
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _prepare(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:  # checked before WAL mode, which would change the file
            raise sqlite3.DatabaseError("an SQLite database of something else: it has no meta table")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        self.db.execute("PRAGMA foreign_keys = ON")
        self._init_schema()

    def _init_schema(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            has_meta = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if has_meta:
                self._check_version()
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(stmt)
            now = str(time.time())
            for key, value in (("schema_version", str(SCHEMA_VERSION)), ("created_at", now),
                               ("forgetless_version", __version__)):
                self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def schema_version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # ------------------------------------------------------------------ studies and cells
    def add_study(self, name: str, spec: dict, cells: list[Cell]) -> None:
        """Record the study and insert its cells as pending (cells already present keep their state).

        All of it in one transaction, so a study is never half-registered.
        """
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT INTO studies VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec_json=excluded.spec_json",
                (name, json.dumps(spec, sort_keys=True), now))
            for c in cells:
                self.db.execute(
                    "INSERT OR IGNORE INTO runs (cell_id, kind, base_id, label, method, lr, config_json,"
                    " meta_json, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                    (c.cell_id, c.kind, c.base_id, c.label, c.method, c.lr,
                     json.dumps(c.config, sort_keys=True), json.dumps(c.meta, sort_keys=True), now))
            # The study is what its file says now: cells of an earlier version are unlinked (their
            # runs and points stay in the store, and come back if the file goes back).
            self.db.execute("DELETE FROM study_cells WHERE study = ?", (name,))
            self.db.executemany("INSERT OR IGNORE INTO study_cells VALUES (?, ?)",
                                [(name, c.cell_id) for c in cells])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def runs(self, study: str | None = None) -> list[dict]:
        """All runs (of one study when named), in insertion order."""
        if study is None:
            rows = self.db.execute("SELECT * FROM runs ORDER BY rowid").fetchall()
        else:
            rows = self.db.execute(
                "SELECT r.* FROM runs r JOIN study_cells s ON s.cell_id = r.cell_id "
                "WHERE s.study = ? ORDER BY r.rowid", (study,)).fetchall()
        return [self._row(r) for r in rows]

    def run_records(self, study: str | None = None) -> dict[str, Run]:
        """`runs` as typed records, keyed by cell id (in insertion order)."""
        return {r["cell_id"]: Run.from_row(r) for r in self.runs(study)}

    def runs_by_id(self, study: str | None = None) -> dict[str, dict]:
        """`runs`, keyed by cell id (in insertion order)."""
        return {r["cell_id"]: r for r in self.runs(study)}

    def run(self, cell_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM runs WHERE cell_id = ?", (cell_id,)).fetchone()
        return self._row(row) if row else None

    def studies(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM studies ORDER BY created_at")]

    # ------------------------------------------------------------------ claiming (cross-process)
    def claim(self, cell_id: str, owner: str, stale_after: float = 600.0) -> bool:
        """Atomically take a cell to run; True when this owner got it.

        A cell is free when pending, or running under an owner that is gone: a dead process on
        this host, or a heartbeat older than `stale_after` seconds (another host).
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute(
                "SELECT status, owner, heartbeat FROM runs WHERE cell_id = ?", (cell_id,)).fetchone()
            free = row is not None and (
                row["status"] == "pending"
                or (row["status"] == "running" and owner_gone(row["owner"], row["heartbeat"], stale_after)))
            if free:
                now = time.time()
                self.db.execute(
                    "UPDATE runs SET status='running', owner=?, heartbeat=?, error=NULL,"
                    " attempts=attempts+1, started_at=COALESCE(started_at, ?), finished_at=NULL"
                    " WHERE cell_id=?", (owner, now, now, cell_id))
            self.db.execute("COMMIT")
            return free
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def heartbeat(self, cell_ids: Iterable[str], owner: str) -> None:
        ids = list(cell_ids)
        if ids:
            marks = ",".join("?" * len(ids))
            self._tx(f"UPDATE runs SET heartbeat=? WHERE owner=? AND status='running' AND cell_id IN ({marks})",
                     [time.time(), owner, *ids])

    def beat(self, cell_id: str) -> None:
        self._tx("UPDATE runs SET heartbeat=? WHERE cell_id=? AND status='running'", (time.time(), cell_id))

    def set_out_dir(self, cell_id: str, out_dir: str) -> None:
        self._tx("UPDATE runs SET out_dir=? WHERE cell_id=?", (self._stored_path(out_dir), cell_id))

    def finish(self, cell_id: str, status: str, error: str | None = None,
               checkpoint: str | None = None, pruned: str | None = None) -> None:
        """The final status; `pruned` (why a sweep --prune stopped it) goes into meta.pruned (no
        schema change: older stores and readers keep working, the points stay ordinary points)."""
        if status not in TERMINAL:
            raise ValueError(f"status must be one of {TERMINAL}; got {status!r}")
        self._tx("UPDATE runs SET status=?, error=?, checkpoint=COALESCE(?, checkpoint), finished_at=?,"
                 " heartbeat=NULL, meta_json=CASE WHEN ? IS NULL THEN meta_json"
                 " ELSE json_set(meta_json, '$.pruned', ?) END WHERE cell_id=?",
                 (status, error, self._stored_path(checkpoint), time.time(), pruned, pruned, cell_id))

    def requeue_failed(self, cell_ids: Iterable[str]) -> int:
        """Failed cells back to pending (their points and checkpoints kept, so they resume)."""
        ids = list(cell_ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        return self._tx(f"UPDATE runs SET status='pending', owner=NULL WHERE status='failed'"
                        f" AND cell_id IN ({marks})", ids).rowcount

    def release(self, cell_ids: Iterable[str], owner: str) -> None:
        """This owner's running cells back to pending (an interrupted runner letting go)."""
        for cid in cell_ids:
            self._tx("UPDATE runs SET status='pending', owner=NULL, heartbeat=NULL"
                     " WHERE cell_id=? AND owner=? AND status='running'", (cid, owner))

    def reset(self, cell_id: str) -> None:
        """Back to pending, dropping its points (a cell re-run from scratch)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM points WHERE run_id=?", (cell_id,))
            self.db.execute("UPDATE runs SET status='pending', error=NULL, owner=NULL, heartbeat=NULL,"
                            " checkpoint=NULL, started_at=NULL, finished_at=NULL WHERE cell_id=?", (cell_id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ points
    def add_point(self, run_id: str, point: dict) -> None:
        """Insert (or replace, when the step was evaluated before an interruption) one eval point."""
        self.add_points(run_id, [point])

    def add_points(self, run_id: str, points: list[dict]) -> None:
        """Several points of one run in one transaction (all or none)."""
        # Every other measurement (forgetless.metrics: kl_to_base, forgetting_se, replay_tokens, ...)
        # goes to extra_json, where EvalPoint.value finds it by name.
        known = set(POINT_COLUMNS) | {metrics.SOURCES_STORED, metrics.SOURCES_KEY, "kind"}
        rows = []
        for p in points:
            sources = p.get(metrics.SOURCES_KEY, p.get(metrics.SOURCES_STORED))
            extra = {k: v for k, v in p.items() if k not in known}
            rows.append((run_id, int(p["step"]), None if p.get("tokens") is None else int(p["tokens"]),
                         *(_num(p.get(name)) for name in MEASURED), _num(p.get("wall_time")),
                         None if sources is None else json.dumps(sources, sort_keys=True),
                         json.dumps(extra, sort_keys=True, default=str) if extra else None))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def eval_points(self, run_id: str | None = None, study: str | None = None) -> list[EvalPoint]:
        """Eval points with their run's label/method/lr/kind/base/meta, ordered by run and step:
        how every reader reads the store's points."""
        return [EvalPoint.from_row(row) for row in self._point_rows(run_id, study)]

    def points(self, run_id: str | None = None, study: str | None = None) -> list[dict]:
        """Deprecated (issue 25): `eval_points`, typed. The same points as dicts (with the run's
        status), kept for code written against earlier versions; it warns."""
        warnings.warn("Store.points() is deprecated: use Store.eval_points(), which gives typed EvalPoint "
                      "records (a run's status: Store.run_records())", DeprecationWarning, stacklevel=2)
        return self._point_rows(run_id, study)

    def _point_rows(self, run_id: str | None, study: str | None) -> list[dict]:
        """The points joined with their run's columns, as dicts (what EvalPoint.from_row reads)."""
        sql = ("SELECT p.*, r.kind, r.label, r.method, r.lr, r.base_id, r.status, r.meta_json FROM points p "
               "JOIN runs r ON r.cell_id = p.run_id")
        args: list = []
        if study is not None:
            sql += " JOIN study_cells s ON s.cell_id = p.run_id WHERE s.study = ?"
            args.append(study)
        if run_id is not None:
            sql += (" AND" if args else " WHERE") + " p.run_id = ?"
            args.append(run_id)
        sql += " ORDER BY r.rowid, p.step"
        out = []
        for r in self.db.execute(sql, args).fetchall():
            d = dict(r)
            for key in ("sources_json", "extra_json", "meta_json"):
                raw = d.get(key)
                d[key[:-5]] = json_field(d, key) if raw else d.pop(key)
                if raw and not isinstance(d[key[:-5]], dict):
                    raise StoreError(f"results store: a point of cell {d['run_id']!r} is damaged ({key} is "
                                     "not a JSON object); restore the store from a copy, or delete the row")
            for key in MEASURED:  # SQLite gives NULL for a NaN loss; a missing accuracy stays None
                if d[key] is None and key != "accuracy":
                    d[key] = math.nan
            out.append(d)
        return out


def owner_gone(owner: str | None, heartbeat: float | None, stale_after: float) -> bool:
    """Whether the runner that claimed a cell is gone: no owner, a heartbeat older than
    `stale_after` seconds, or (on this host) a process that no longer lives."""
    if not owner:
        return True
    if heartbeat is None or time.time() - heartbeat > stale_after:
        return True
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not _alive(int(pid))
    return False


def _alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a killed runner not yet reaped)."""
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): existence is all we can tell
        return True
