"""A user's own finetuning data: a file (.jsonl .json .parquet .csv) or `hf:NAME`, in the format
its columns say.

    messages                    chat: a list of {role, content} (system/user/assistant), the
                                ShareGPT spelling {from, value} with human/gpt too
    conversations               ShareGPT: the same list under ShareGPT's own key
    prompt, completion          plain strings (concatenated), or lists of messages (a chat)
    instruction, output [input] Alpaca
    text                        plain text, the loss on all of it
    answer (any format)         the checkable answer: exact-match accuracy

The first format whose columns are all present wins, in that order; other columns are ignored.
`columns` renames the data's columns first ({"question": "prompt"}), a mapped column replacing a
column of the target's name. Each record keeps the conversation (`SFTRecord.messages`) for a
tokenizer with a chat template, and a plain rendering (`prompt`, `response`) for one without.

The held-out split is chosen by content: the records whose SHA-1 of their content is smallest,
5% of them but at least 8 and at most 512 (and at most half), identical records always on the
same side. It is the same on every machine and for every seed, and the two sides never share a
record.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import hub  # hub.load_hub_dataset looked up at call time (tests replace it)
from .cache import cache_dir, key_fraction
from .hub import DatasetUnavailable
from .sft import SFTRecord
from .templates import ALPACA_NO_INPUT, alpaca_prompt

EXTENSIONS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
FORMATS = {  # name: required columns, in the order formats are tried
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "prompt-completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "text": ("text",),
}
COLUMNS = ("messages", "prompt", "completion", "instruction", "input", "output", "text", "answer", "conversations")
ACCEPTED = ("messages (chat), prompt+completion, instruction+output[+input] (Alpaca), text, conversations (ShareGPT); "
            "an answer column adds exact-match accuracy")
VAL_SHARE, VAL_MIN, VAL_MAX = 0.05, 8, 512
ROLES = {"system": "system", "user": "user", "assistant": "assistant",
         "human": "user", "gpt": "assistant"}  # the last two: ShareGPT's names


class TaskDataUnavailable(DatasetUnavailable, ValueError):
    """`hf:NAME` could not be loaded; a ValueError too, so the command line prints one line."""


def is_user_data(name: str) -> bool:
    """Does a task name name a user's data (a file or hf:NAME) rather than a built-in task?"""
    return name.startswith("hf:") or Path(name).suffix.lower() in EXTENSIONS


def parse_columns(spec: str | Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """{data column: format column} from "a=b,c=d", a list of such strings, or a mapping."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        pairs = [(str(k), str(v)) for k, v in spec.items()]
    else:
        items = [spec] if isinstance(spec, str) else list(spec)
        pairs = []
        for part in (p.strip() for item in items for p in str(item).split(",")):
            if not part:
                continue
            source, sep, target = (s.strip() for s in part.partition("="))
            if not sep or not source or not target:
                raise ValueError(f"columns: {part!r} is not DATA_COLUMN=FORMAT_COLUMN "
                                 "(e.g. question=prompt,reply=completion)")
            pairs.append((source, target))
    mapping: dict[str, str] = {}
    for source, target in pairs:
        if target not in COLUMNS:
            raise ValueError(f"columns: {source}={target} maps to {target!r}; allowed targets: "
                             f"{', '.join(COLUMNS)}")
        if target in mapping.values():
            raise ValueError(f"columns: two columns map to {target!r}")
        mapping[source] = target
    return mapping


def read_table(spec: str | Path):
    """A `datasets.Dataset` of the file's rows, or of hf:NAME's train split; (dataset, where)."""
    import datasets

    spec = str(spec)
    if spec.startswith("hf:"):
        name = spec[3:]
        try:
            return hub.load_hub_dataset(name, "train"), name
        except DatasetUnavailable as err:
            reason = str(err).splitlines()[0]
            raise TaskDataUnavailable(f"{reason} (a hub dataset loads offline only when cached; "
                                      "otherwise save it as .jsonl/.parquet and give the file)"
                                      ) from err
    path = Path(spec).expanduser()
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"task file {path}: unsupported extension {path.suffix!r}; allowed: "
                         f"{', '.join(EXTENSIONS)} (or hf:NAME)")
    if not path.is_file():
        raise FileNotFoundError(f"task file {path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"task file {path} is empty")
    bars_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Generating train split" bars for a local file are noise
    try:
        # Under forgetless's cache, so tests and users with FORGETLESS_CACHE keep it in one place.
        return datasets.load_dataset(kind, data_files=str(path.resolve()), split="train",
                                     cache_dir=str(cache_dir() / "datasets")), str(path)
    except Exception as err:  # pyarrow/json errors arrive wrapped in DatasetGenerationError
        cause = err.__cause__ or err
        first = (str(cause).strip().splitlines() or [""])[0]
        raise ValueError(f"task file {path} could not be read as {kind}: "
                         f"{type(cause).__name__}: {first}") from err
    finally:
        if bars_on:
            datasets.enable_progress_bars()


def detect_format(columns: Iterable[str], where: str) -> str:
    present = set(columns)
    for name, needed in FORMATS.items():
        if all(c in present for c in needed):
            return name
    raise ValueError(f"{where}: cannot tell the data format from its columns "
                     f"{sorted(present)}; accepted formats: {ACCEPTED}. Rename yours with "
                     "--columns DATA_COLUMN=FORMAT_COLUMN (e.g. question=prompt,reply=completion)")


def load_user_task(spec: str | Path, split: str, n: int | None = None, seed: int = 0,
                   columns: Any = None) -> list[SFTRecord]:
    """The `split` ("train"/"validation") records of a user's data; n=None: all of the split,
    else a seeded sample of n (the split itself does not depend on the seed)."""
    table, where = read_table(spec)
    mapping = parse_columns(columns)
    missing = [c for c in mapping if c not in table.column_names]
    if missing:
        raise ValueError(f"columns: {where} has no column(s) {missing}; columns found: "
                         f"{sorted(table.column_names)}")
    replaced = [t for s, t in mapping.items() if t in table.column_names and t not in mapping]
    if replaced:
        table = table.remove_columns(replaced)
    if mapping:
        table = table.rename_columns(mapping)
    fmt = detect_format(table.column_names, where)
    records = [to_record(fmt, row, f"{where} record {i + 1}") for i, row in enumerate(table)]
    if len(records) < 2:
        raise ValueError(f"{where} holds {len(records)} record(s); a training and a held-out "
                         "part need at least 2")
    held_out = validation_mask(records)
    if all(held_out):  # only when every record is the same one
        raise ValueError(f"{where}: all {len(records)} records are identical, so no record is "
                         "left to train on once the held-out part is set aside")
    keep = [r for r, v in zip(records, held_out, strict=True) if v == (split == "validation")]
    if n is not None and n < len(keep):
        chosen = sorted(random.Random(f"user-{seed}").sample(range(len(keep)), n))
        keep = [keep[i] for i in chosen]
    return keep


def validation_mask(records: list[SFTRecord]) -> list[bool]:
    """True for the held-out records: those of the k smallest content hashes (module docstring)."""
    keys = [key_fraction(json.dumps([r.prompt, r.response, r.messages, r.answer])) for r in records]
    k = min(VAL_MAX, max(VAL_MIN, math.ceil(VAL_SHARE * len(records))), len(records) // 2)
    threshold = sorted(keys)[k - 1]
    return [key <= threshold for key in keys]


def _text(row: dict, column: str, where: str, optional: bool = False) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip() and not optional):
        if optional:
            return ""
        raise ValueError(f"{where}: column {column!r} is empty")
    if isinstance(value, (list, dict)):
        raise ValueError(f"{where}: column {column!r} holds a {type(value).__name__}, not text")
    return str(value)  # numbers read from csv/json are text here


def _messages(value: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict):
            raise ValueError(f"{where}: message {j + 1} is not a {{role, content}} object")
        role, content = (m.get("role"), m.get("content")) if m.get("role") is not None else (
            m.get("from"), m.get("value"))
        if role not in ROLES:
            raise ValueError(f"{where}: message {j + 1} has role {role!r}; allowed: "
                             f"{', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"{where}: message {j + 1} has no text content")
        out.append((ROLES[role], content))
    last = max((j for j, (role, _) in enumerate(out) if role == "assistant"), default=None)
    if last is None:
        raise ValueError(f"{where}: the conversation has no assistant turn to learn")
    if not any(role == "user" for role, _ in out[:last]):
        raise ValueError(f"{where}: the conversation has no user turn before its last "
                         "assistant turn")
    return out[: last + 1]  # turns after the last assistant reply teach nothing


def plain_chat(messages: list[tuple[str, str]]) -> tuple[str, str]:
    """(prompt, response) of a conversation for a tokenizer without a chat template: the Alpaca
    layout (a system turn replaces its opening sentence), the last assistant turn the response.
    A single user turn gives exactly the Alpaca prompt without input."""
    *before, (_, response) = messages
    head = ALPACA_NO_INPUT.split("### Instruction:")[0]
    parts = [] if any(r == "system" for r, _ in before) else [head]
    for role, content in before:
        if role == "system":
            parts.append(f"{content}\n\n")
        elif role == "user":
            parts.append(f"### Instruction:\n{content}\n\n### Response:\n")
        else:
            parts.append(f"{content}\n\n")
    return "".join(parts), response


def to_record(fmt: str, row: dict, where: str) -> SFTRecord:
    answer = row.get("answer")
    answer = None if answer is None else str(answer).strip()
    if fmt == "text":
        return SFTRecord("", _text(row, "text", where), answer)
    if fmt == "alpaca":
        instruction, given = _text(row, "instruction", where), _text(row, "input", where, True)
        output = _text(row, "output", where)
        user = f"{instruction}\n\n{given}" if given.strip() else instruction
        return SFTRecord(alpaca_prompt(instruction, given), output, answer,
                         (("user", user), ("assistant", output)))
    if fmt == "prompt-completion":
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational form
            if isinstance(completion, str):
                completion = [{"role": "assistant", "content": completion}]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            messages = _messages(list(prompt or []) + list(completion or []), where)
            return SFTRecord(*plain_chat(messages), answer, tuple(messages))
        prompt, completion = _text(row, "prompt", where), _text(row, "completion", where)
        return SFTRecord(prompt, completion, answer, (("user", prompt), ("assistant", completion)))
    messages = _messages(row.get("messages" if fmt == "chat" else "conversations"), where)
    return SFTRecord(*plain_chat(messages), answer, tuple(messages))


def check(record: SFTRecord, generated: str) -> bool:
    """Exact match: the generated text, or its last non-empty line, equals the answer, both with
    whitespace runs collapsed and the ends trimmed."""
    def norm(s: str) -> str:
        return re.sub(r"\s+", " ", s).strip()

    lines = [line for line in generated.splitlines() if line.strip()]
    want = norm(record.answer or "")
    return norm(generated) == want or (bool(lines) and norm(lines[-1]) == want)
