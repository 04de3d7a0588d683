"""Finetuning tasks by name: generated ones (offline, seeded) and the paper's three datasets.

    arith       generated multi-step arithmetic, "The answer is: N"       (MetaMathQA analogue)
    instruct    generated word/sentence instructions, Alpaca template     (Alpaca analogue)
    code        generated short Python functions, checked by running them (Magicoder analogue)
    metamathqa  meta-math/MetaMathQA (query, response)
    alpaca      tatsu-lab/alpaca (instruction, input, output)
    magicoder   ise-uiuc/Magicoder-Evol-Instruct-110K (instruction, response)
    FILE        a user's .jsonl/.json/.parquet/.csv, format told by its columns (user_data.py)
    hf:NAME     a Hugging Face dataset's train split, the same way (offline: when cached)

Generated tasks draw records from `random.Random(f"{name}-{seed}")` and assign each to a split by
a hash of its prompt, so the splits are disjoint for every seed, and a record never appears twice
within a split.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import task_arith, task_code, task_instruct, user_data
from .adapters import ADAPTERS, load_dataset_task
from .cache import key_fraction
from .sft import SFTRecord

GENERATED = {"arith": task_arith, "instruct": task_instruct, "code": task_code}
TASKS = tuple(GENERATED) + tuple(ADAPTERS)
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation",
               "test": "validation"}
VAL_FRACTION = 0.1  # of generated prompts; datasets use adapters.VAL_FRACTION
DEFAULT_N = {"train": 5000, "validation": 500}


def _split(split: str) -> str:
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {sorted(SPLIT_NAMES)}, got {split!r}")
    return SPLIT_NAMES[split]


def load_task(name: str, split: str = "train", n: int | None = None, seed: int = 0, *,
              path: str | Path | None = None, columns=None) -> list[SFTRecord]:
    """`n` records of task `name` (see the module docstring) for `split` ("train"/"validation").

    Generated tasks: n defaults to 5000 (train) / 500 (validation); records are deterministic in
    (name, split, n, seed). Datasets: loaded from `path` (local .json/.jsonl/.parquet/.csv in the
    hub schema) or else the hub; n=None gives the whole split, otherwise a seeded sample of n. A
    dataset name may also carry its file, as "alpaca:/data/alpaca_data.json". A user's data (a
    file or "hf:NAME", see user_data.py) likewise. `columns` ("a=b,c=d", a list of such, or a
    mapping) renames a data column a to the format's column b first.
    """
    str_name = str(name)
    prefix, sep, rest = str_name.partition(":")
    if sep and path is None and prefix in TASKS:
        name, path = prefix, rest
    split = _split(split)
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive number of records or None, got {n}")
    if name in GENERATED:
        if path is not None or columns:
            raise ValueError(f"task {name!r} is generated; it takes no path and no columns")
        return _generate(name, split, DEFAULT_N[split] if n is None else n, seed)
    if name in ADAPTERS:
        return load_dataset_task(name, split, n, seed, path, columns)
    if path is None and (user_data.is_user_data(str_name) or Path(str_name).expanduser().is_file()):
        return user_data.load_user_task(str_name, split, n, seed, columns)
    raise ValueError(f"unknown task {str_name!r}; choose one of {', '.join(TASKS)}, or give a "
                     f"data file ({', '.join(user_data.EXTENSIONS)}) or hf:NAME")


def _generate(name: str, split: str, n: int, seed: int) -> list[SFTRecord]:
    module = GENERATED[name]
    rng = random.Random(f"{name}-{seed}")
    seen: set[str] = set()
    records: list[SFTRecord] = []
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 50 * n + 10_000:
            raise ValueError(f"task {name!r} cannot give {n} distinct {split} records "
                             f"(found {len(records)}); ask for fewer")
        rec = module.generate(rng)
        in_val = key_fraction(f"{name}|{rec.prompt}") < VAL_FRACTION
        if in_val != (split == "validation") or rec.prompt in seen:
            continue
        seen.add(rec.prompt)
        records.append(rec)
    return records


def check_answer(task: str, record: SFTRecord, generated_text: str, **kwargs) -> bool:
    """Is `generated_text` (the model's continuation of `record.prompt`) correct?

    arith/metamathqa: the number after "The answer is:" equals `record.answer`.
    instruct: the first line of the output equals `record.answer` (whitespace-trimmed).
    code: the generated function passes `record.answer`'s test cases, run in a separate,
    resource-limited process (kwargs: timeout, memory_mb); never executed in this process.
    a user's data (a file or hf:NAME): exact match with its `answer` column (user_data.check).
    """
    if task.split(":", 1)[0] not in TASKS and (user_data.is_user_data(task)
                                               or Path(task).expanduser().is_file()):
        if record.answer is None:
            raise ValueError(f"this {task!r} record has no checkable answer (no 'answer' column)")
        return user_data.check(record, generated_text)
    task = task.split(":", 1)[0]
    if record.answer is None:
        raise ValueError(f"this {task!r} record has no checkable answer (record.answer is None); "
                         "use the loss on held-out records instead")
    if task in ("arith", "metamathqa"):
        return task_arith.check(record, generated_text)
    if task == "instruct":
        return task_instruct.check(record, generated_text)
    if task in ("code", "magicoder"):
        return task_code.check(record, generated_text, **kwargs)
    raise ValueError(f"task {task!r} has no answer checker; checkable tasks: arith, instruct, "
                     "code, metamathqa")


def check_answers(task: str, records: list[SFTRecord], generated_texts: list[str],
                  workers: int = 4, **kwargs) -> list[bool]:
    """`check_answer` over a batch. Code checks wait on their sandbox processes, so they run
    `workers` at a time (threads here, each sample still in its own limited process)."""
    if len(records) != len(generated_texts):
        raise ValueError(f"{len(records)} records but {len(generated_texts)} generated texts")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda pair: check_answer(task, *pair, **kwargs),
                             zip(records, generated_texts, strict=True)))
