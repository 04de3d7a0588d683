"""Reading the results store: read-only connections, and rows as records (JSON columns decoded
within bounds, run paths made usable from wherever the store now is). A store or row that cannot be
read is a StoreError (one line), never a traceback: the store is a file a user hands in."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from forgetless.errors import UserError
from forgetless.sweep.study import RENAMED
from forgetless.untrusted import load_json


class StoreVersionError(UserError, RuntimeError):
    """The store was written by a newer forgetless; upgrade instead of touching it."""


class StoreError(UserError, OSError):
    """The store cannot be opened or created: named, and never overwritten."""


def connect_readonly(path: Path, timeout: float) -> sqlite3.Connection:
    """SQLite's read-only mode (`mode=ro`): nothing is written, and a read-only file or directory
    is no obstacle. StoreError when there is no store, or it cannot be opened."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise StoreError(f"{path} {what}: no results store there (nothing has run with this "
                         "study and --out yet, or --out names another directory)")
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # WAL mode in a directory we cannot write, with no -wal file: no writer can be at
            # work there, so the file alone is the whole store (immutable: no -shm needed).
            if Path(f"{path}-wal").exists() or os.access(path.parent, os.W_OK):
                raise
            db.close()
            db = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    except sqlite3.Error as err:
        raise StoreError(f"{path} is not a usable forgetless results store ({err}); the file "
                         "was not modified") from None
    return db


def check_version(db: sqlite3.Connection, path: Path, supported: int) -> None:
    """StoreVersionError for a store of a newer schema than `supported`."""
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    try:
        found = int(row[0]) if row else 0
    except (TypeError, ValueError):
        raise sqlite3.DatabaseError(f"schema_version {row[0]!r} is not a number") from None
    if found > supported:
        raise StoreVersionError(
            f"{path} has results-store schema version {found}, but this forgetless "
            f"reads up to version {supported}; upgrade forgetless to open it "
            "(the file was not modified).")


def stored_path(home: Path, path: str | Path | None) -> str | None:
    """A run's path as kept in the store whose folder is `home`: relative to it when inside it, so
    the sweep directory can move (or be used from another working directory)."""
    if path is None:
        return None
    full = Path(path).absolute()
    try:
        return full.relative_to(Path(home).absolute()).as_posix()
    except ValueError:
        return str(full)


def located(home: Path, cell_id: str, value: str | None) -> str | None:
    """A stored run path as a path usable from here. Older stores kept them relative to the
    working directory of the sweep, or absolute where the directory then was: the part from
    `cells/<cell id>` on is what names the run, and is found under the store's folder `home`."""
    if not value:
        return value
    home = Path(home).absolute()
    parts = Path(value).parts
    for i in range(len(parts) - 1):
        if parts[i] == "cells" and parts[i + 1] == cell_id:
            return str(home.joinpath(*parts[i:]))
    return str(Path(value) if Path(value).is_absolute() else home / value)


def run_row(row: sqlite3.Row, home: Path) -> dict:
    """A `runs` row as a dict: config and meta decoded, out_dir and checkpoint located."""
    d = dict(row)
    config, meta = json_field(d, "config_json"), json_field(d, "meta_json")
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise StoreError(f"results store: the row of cell {d.get('cell_id')!r} is damaged (config_json and "
                         "meta_json must be JSON objects); restore the store from a copy, or delete the row")
    # stores written before fields took the training config's names (RENAMED) read as if renamed
    d["config"] = {RENAMED.get(k, k): v for k, v in config.items()}
    d["meta"] = meta
    for key in ("out_dir", "checkpoint"):
        d[key] = located(home, d["cell_id"], d.get(key))
    return d


def json_field(d: dict, key: str):
    """A JSON column of a row, popped from `d` (bounded parse; None when it is not JSON)."""
    raw = d.pop(key, None)
    try:
        return load_json(raw, max_bytes=64 << 20) if isinstance(raw, (str, bytes)) else None
    except ValueError:
        return None
