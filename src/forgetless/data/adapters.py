"""The paper's three finetuning datasets, with their real column names and prompt templates.

    MetaMathQA   query, response (ends "The answer is: N")  -> Alpaca template without input
    Alpaca       instruction, input, output                  -> the Alpaca template
    Magicoder    instruction, response                       -> the Magicoder template

Loaded from a local .json/.jsonl/.parquet/.csv in the same schema (other column names mapped
with `columns`), or from the Hugging Face hub. The hub releases have one split; the validation
split is a fixed hash-chosen 2% of the prompts. Alpaca's `input` may be absent (no input block).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from . import hub  # hub.load_hub_dataset looked up at call time (tests replace it)
from .cache import key_fraction
from .hub import DatasetUnavailable
from .sft import SFTRecord
from .task_arith import extract_answer
from .templates import ALPACA_INPUT, ALPACA_NO_INPUT, MAGICODER, alpaca_prompt  # noqa: F401 (re-exported)
from .user_data import TaskDataUnavailable, parse_columns, read_table

VAL_FRACTION = 0.02

def _metamathqa(row: dict) -> SFTRecord:
    return SFTRecord(alpaca_prompt(row["query"]), row["response"], extract_answer(row["response"]))


def _alpaca(row: dict) -> SFTRecord:
    return SFTRecord(alpaca_prompt(row["instruction"], row.get("input") or ""), row["output"])


def _magicoder(row: dict) -> SFTRecord:
    return SFTRecord(MAGICODER.format(instruction=row["instruction"]), row["response"])


@dataclass(frozen=True)
class Adapter:
    hub_name: str
    columns: tuple[str, ...]  # required
    to_record: object  # row -> SFTRecord


ADAPTERS = {
    "metamathqa": Adapter("meta-math/MetaMathQA", ("query", "response"), _metamathqa),
    "alpaca": Adapter("tatsu-lab/alpaca", ("instruction", "output"), _alpaca),  # input optional
    "magicoder": Adapter("ise-uiuc/Magicoder-Evol-Instruct-110K", ("instruction", "response"),
                         _magicoder),
}


def _rows(name: str, path: str | Path | None):
    adapter = ADAPTERS[name]
    if path is not None:
        table, where = read_table(Path(path).expanduser())
        return iter(table), where
    hint = (f": load_task({name!r}, path='FILE') with a .json/.jsonl/.parquet/.csv holding the "
            f"columns {', '.join(adapter.columns)}")
    try:
        return iter(hub.load_hub_dataset(adapter.hub_name, "train", local_hint=hint)), adapter.hub_name
    except TaskDataUnavailable:
        raise
    except DatasetUnavailable as err:  # a ValueError too, so the command line prints no traceback
        raise TaskDataUnavailable(str(err)) from err


def load_dataset_task(name: str, split: str, n: int | None, seed: int,
                      path: str | Path | None, columns=None) -> list[SFTRecord]:
    adapter = ADAPTERS[name]
    mapping = parse_columns(columns)
    rows, where = _rows(name, path)
    records: list[SFTRecord] = []
    for i, row in enumerate(rows):
        if mapping:  # a mapped column replaces one of the target's name
            row = {mapping.get(k, k): v for k, v in row.items()
                   if k in mapping or k not in mapping.values()}
        missing = [c for c in adapter.columns if row.get(c) is None]
        if missing:
            raise ValueError(f"{where} record {i + 1} lacks column(s) {missing} of the {name} "
                             f"schema (needs {list(adapter.columns)}; columns found: {sorted(row)}). "
                             "Give the file alone (--task FILE) to have its format told from its "
                             "columns, or map them with --columns DATA_COLUMN=FORMAT_COLUMN.")
        rec = adapter.to_record(row)
        in_val = key_fraction(f"{name}|{rec.prompt}") < VAL_FRACTION
        if in_val == (split == "validation"):
            records.append(rec)
    if not records:
        raise ValueError(f"{where} gave no {split} records for {name!r}; a file needs at least "
                         f"~{int(1 / VAL_FRACTION)} records to have a validation part")
    if n is not None and n < len(records):
        keep = sorted(random.Random(f"{name}-{seed}").sample(range(len(records)), n))
        records = [records[i] for i in keep]
    return records
