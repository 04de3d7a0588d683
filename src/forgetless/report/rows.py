"""The report's one row format and the adapters that make it: a finetuning eval point with its run's
labels (`Row`), from a results store (`rows_from_store`, through `Store.eval_points`) or from one
`forgetless finetune` run directory (`rows_from_run`).

The verdicts, `compare`, the frontier tables and the figures all read `Row`s; a measurement is read
by its name in forgetless.metrics (`row.value("kl_to_base")`), never by where it was stored. Tables
built by hand (tests, simulations, older callers) may still pass dicts with the same keys: `as_rows`
turns them into rows, so every reader takes both. A row also answers `row["key"]` and
`row.get("key")` for readers of the older dict rows (benchmarks, older callers).

Names: `method` is the study's method label ("full-muon", "lora8-adamw"); `finetuning` what that
method trains, "full" or "lora" (FinetuneConfig.method; the older dict rows called it `kind`, a
name that also means a run's kind and a module kind); `seed` the finetuning seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from forgetless import metrics

OLD_NAMES = {"kind": "finetuning", "finetune_seed": "seed"}  # dict rows' keys -> Row fields


class _ReadsAsDict:
    """`get` over `__getitem__`, for records that also read as the older dict rows."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


@dataclass(slots=True)  # not frozen: a verdict builds thousands, and frozen init is slow
class Row(_ReadsAsDict):
    """One finetuning eval point as the report reads it."""

    run_id: str | None = None
    base: str | None = None  # the base's label, e.g. "adamw/s0"
    base_optimizer: str | None = None
    base_seed: Any = None
    task: str | None = None
    method: str | None = None  # the study's method label
    finetuning: str | None = None  # "full" | "lora"
    optimizer: str | None = None  # the finetuning optimizer
    rank: int | None = None  # LoRA's rank
    lr: float | None = None
    seed: Any = None  # the finetuning seed
    step: int = 0
    forgetting: float = float("nan")
    learning: float = float("nan")
    accuracy: float | None = None
    tokens: int | None = None
    sources: dict[str, float] | None = None  # forgetting per held-out source
    extra: dict[str, Any] = field(default_factory=dict)  # every other measurement, by its metric name
    reference: str | None = None  # the text forgetting was measured on

    def value(self, name: str) -> float:
        """The metric `name` (forgetless.metrics) at this point; NaN when it was not measured."""
        return metrics.value(self, name)

    @property
    def wise(self) -> float | None:
        """The WiSE-FT interpolation weight α of a point of interpolated weights, else None."""
        return self.extra.get("wise")

    @property
    def remedy(self) -> str:
        """`compare`'s remedy: the method, or "<method>+wise" for its WiSE-FT points."""
        return str(self.method) + ("+wise" if self.wise is not None else "")

    @property
    def base_model(self) -> str:
        """The base's label without its pretraining seed ("adamw/s0" -> "adamw"): a panel of `compare`."""
        label, seed = str(self.base), self.base_seed
        return label.rsplit("/s", 1)[0] if seed is not None and label.endswith(f"/s{seed}") else label

    # Read access of the older dict rows, for readers not yet moved to attributes.
    def __getitem__(self, key: str) -> Any:
        name = OLD_NAMES.get(key, key)
        if name in _FIELDS:
            return getattr(self, name)
        if key in metrics.METRICS:
            return self.value(key)
        if key in ("wise", "remedy"):
            return getattr(self, key)
        raise KeyError(key)

    @classmethod
    def of(cls, row: Row | Mapping[str, Any]) -> Row:
        """A row from a dict of the older format (keys as the fields, `kind` for `finetuning`,
        `finetune_seed` for `seed`; any other measurement goes to `extra`)."""
        if isinstance(row, Row):
            return row
        known = {_FIELD_OF[k]: v for k, v in row.items() if k in _FIELD_OF}
        extra = {k: v for k, v in row.items() if k not in _FIELD_OF and k not in _DERIVED}
        return cls(**known, extra={**(row.get("extra") or {}), **extra})


_FIELDS = {f.name for f in fields(Row)}
_FIELD_OF = {**{f: f for f in _FIELDS if f != "extra"}, **OLD_NAMES}  # a dict row's key -> its field
_DERIVED = {"extra", "remedy"}  # keys of a dict row that are not measurements (remedy: from method, wise)


class _Keyed(_ReadsAsDict):
    """Records that also read as the older dict rows (`r["seed"]`, `r.get("stable_rank")`), and are
    made from them by `of` (keys renamed by OLD; others dropped)."""

    OLD: ClassVar[dict[str, str]] = {}

    def __getitem__(self, key: str) -> Any:
        name = self.OLD.get(key, key)
        if name not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, name)

    @classmethod
    def of(cls, row):
        if isinstance(row, cls):
            return row
        names = {f.name for f in fields(cls)}
        return cls(**{cls.OLD.get(k, k): v for k, v in row.items() if cls.OLD.get(k, k) in names})

    @classmethod
    def many(cls, rows) -> list:
        return [cls.of(r) for r in rows]


@dataclass(frozen=True)
class PretrainRow(_Keyed):
    """A finished pretraining run: its validation loss (last eval point) and its base task losses
    (the learning loss at step 0 of its finetunes, per task)."""

    optimizer: str | None = None
    seed: Any = None
    val_loss: float = float("nan")
    task_losses: dict[str, float] = field(default_factory=dict)
    cell_id: str | None = None
    label: str = ""
    checkpoint: str | None = None


@dataclass(frozen=True)
class SpectrumRow(_Keyed):
    """The weight spectra of one base: means over its hidden matrices (claim 4)."""

    optimizer: str | None = None
    seed: Any = None
    stable_rank: float = float("nan")
    effective_rank: float = float("nan")
    density: float = float("nan")
    label: str = ""


@dataclass(frozen=True)
class ActivationRow(_Keyed):
    """Activation sparsity of one base at one module kind (claim 5); `module` was the rows' `kind`."""

    OLD: ClassVar[dict[str, str]] = {"kind": "module"}
    optimizer: str | None = None
    seed: Any = None
    module: str | None = None  # q, k, v, o, gate, up, down, head, ...
    input_sparsity: float = float("nan")
    output_sparsity: float = float("nan")
    input_l1_l2: float = float("nan")
    output_l1_l2: float = float("nan")


@dataclass(frozen=True)
class MemorizationRow(_Keyed):
    """One memorisation run (claim 7) at its selected lr: final exact match on clean and corrupted
    blocks, and its training curve at the shortest (prompt, gen) pair. `curve`: one dict per eval
    point, {step, train_loss, clean_exact, corrupted_exact, clean_token, corrupted_token}, as the
    run recorded them."""

    optimizer: str | None = None
    seed: Any = None
    clean: float = float("nan")
    corrupted: float = float("nan")
    lr: float | None = None
    train_loss: float = float("nan")
    n_eval: int | None = None
    onset: int | None = None  # first step with any corrupted block reproduced
    pair: tuple[int, int] | None = None
    curve: list[dict[str, float]] | None = None
    matched_clean: float | None = None  # both rates at the train loss every optimizer reached
    matched_corrupted: float | None = None


def as_rows(rows: Iterable[Row | Mapping[str, Any]]) -> list[Row]:
    """Rows, whatever their form (typed, or dicts of the older format)."""
    return [Row.of(r) for r in rows]


def _reference(config: Mapping[str, Any]) -> str | None:
    """The reference text forgetting was measured on, as a run's config names it."""
    ref = config.get("forget_corpus") or (config.get("settings") or {}).get("forget_corpus")
    return None if ref is None else str(ref)


def rows_from_store(store, study: str | None = None, wise: bool = True) -> list[Row]:
    """Every finetuning eval point of the store (of one study when named) as a row, WiSE-FT points
    included unless `wise` is False. The one adapter from the store to the report."""
    return rows_from_points(store.eval_points(study=study), store.run_records(study), wise)


def rows_from_points(points: Iterable, runs: Mapping[str, Any], wise: bool = True) -> list[Row]:
    """`rows_from_store` from the store's typed points and runs (`Store.eval_points`,
    `Store.run_records`) already read, so that a report reads the store once."""
    configs = {cid: run.config for cid, run in runs.items()}
    out = []
    for p in points:
        if p.kind != "finetune" or (p.wise and not wise):
            continue
        meta, config = p.meta, configs.get(p.run_id, {})
        extra = dict(p.extra or {})
        out.append(Row(run_id=p.run_id, base=meta.get("base"), base_optimizer=meta.get("base_optimizer"),
                       base_seed=meta.get("base_seed"), task=meta.get("task"), method=p.method,
                       finetuning=config.get("method"), optimizer=config.get("optimizer"),
                       rank=config.get("lora_rank"), lr=p.lr, seed=meta.get("seed"), step=p.step,
                       forgetting=p.forgetting, learning=p.learning, accuracy=p.accuracy, tokens=p.tokens,
                       sources=p.sources, extra=extra, reference=meta.get("reference") or _reference(config)))
    return out


def rows_from_run(run_dir: str | Path, label: str | None = None) -> list[Row]:
    """The eval points of one `forgetless finetune` run directory as rows: its trajectory and, when
    it was run with `wise`, its WiSE curve. Its method is `label` (several run directories compared:
    each its own), else the method and optimizer. Its seed is the finetuning seed: a downloaded
    checkpoint has no pretraining seeds to repeat."""
    import yaml

    path = Path(run_dir)
    cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
    method = label or f"{cfg.get('method', 'full')}-{cfg.get('optimizer')}"
    out = []
    for line in (path / "metrics.jsonl").read_text().splitlines():
        try:
            p = json.loads(line)
        except ValueError:
            continue
        if not isinstance(p, dict) or p.get("kind") != "eval" or p.get("learning") is None:
            continue
        extra = {k: v for k, v in p.items() if k not in _FIELDS and k != "kind"}
        out.append(Row(run_id=str(path), base=Path(str(cfg.get("base"))).name, task=cfg.get("task"), method=method,
                       finetuning=cfg.get("method", "full"), optimizer=cfg.get("optimizer"),
                       rank=cfg.get("lora_rank"), lr=cfg.get("lr"), seed=cfg.get("seed", 0), step=p["step"],
                       **{name: metrics.value(p, name) for name in metrics.columns()},  # forgetting, learning, accuracy
                       tokens=p.get("tokens"), sources=p.get(metrics.SOURCES_KEY), extra=extra,
                       reference=_reference(cfg)))
    return out
