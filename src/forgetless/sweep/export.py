"""Export a study's eval points, one row per point with its run's columns, to CSV or parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from forgetless import metrics
from forgetless.errors import BadFile, one_line
from forgetless.sweep.store import POINT_COLUMNS, Store

# every other declared measurement (kl_to_base, forgetting_se, ...) as a column, NaN where unmeasured
EXTRA = tuple(name for name in metrics.METRICS if name not in POINT_COLUMNS)


def export_rows(store: Store, study: str | None = None) -> list[dict]:
    """Flat rows (one per eval point) with the run's columns, for CSV/parquet."""
    runs = store.run_records(study)  # a point's run status
    rows = []
    for p in store.eval_points(study=study):
        row = {k: getattr(p, k) for k in ("run_id", "kind", "label", "method", "lr", "base_id")}
        row["status"] = runs[p.run_id].status
        row.update({k: getattr(p, k) for k in POINT_COLUMNS})
        meta = p.meta
        row.update(base=meta.get("base"), base_optimizer=meta.get("base_optimizer"),
                   task=meta.get("task"), seed=meta.get("seed", meta.get("base_seed")),
                   sources=json.dumps(p.sources, sort_keys=True) if p.sources else "")
        row.update({name: p.value(name) for name in EXTRA})
        rows.append(row)
    return rows


def export_csv(store: Store, out: str | Path, study: str | None = None) -> int:
    """Write the rows to `out`; returns their number. NaN losses are written as "nan"."""
    rows = export_rows(store, study)
    fields = ["run_id", "kind", "label", "method", "lr", "base_id", "status", *POINT_COLUMNS,
              "sources", "base", "base_optimizer", "task", "seed", *EXTRA]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def export_parquet(store: Store, out: str | Path, study: str | None = None) -> int:
    """The same rows as parquet, through pandas + pyarrow when they are installed."""
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas' parquet engine)
    except ImportError as err:
        raise RuntimeError(
            "parquet export needs pandas and pyarrow (`pip install pandas pyarrow`); "
            "use --csv instead") from err
    rows = export_rows(store, study)
    try:
        pd.DataFrame(rows).to_parquet(out, index=False)
    except OSError as err:  # pandas says it so for a missing folder, pyarrow for the rest
        raise BadFile(f"--parquet {out}: cannot write ({one_line(err)}); choose a writable path") from None
    return len(rows)
