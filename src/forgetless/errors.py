"""Errors a user can cause and fix: the command line prints their message as one line, exit code 2.

Anything else that escapes a command is a bug and keeps its traceback. A box raises one of these
(or a subclass that is also the matching builtin, so library callers catching ValueError or OSError
keep working) with a message that names the file or field and says what to do.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """Something the user handed in (a path, a file, a value) that forgetless cannot use."""


class NoCheckpoint(UserError, FileNotFoundError):
    """A model path that does not exist or holds no model."""


class CorruptCheckpoint(UserError, ValueError):
    """A model or trainer-state file that is truncated or unreadable."""


class BadFile(UserError, ValueError):
    """A file the user named (a config, a reference, a data file) that is missing or unreadable."""


class RunBusy(UserError, FileExistsError):
    """A run directory another process is using (its lock is held)."""


class BadValue(UserError, ValueError):
    """A value out of its range (a count, a size), named with the range allowed."""


class CacheError(UserError, OSError):
    """The cache directory ($FORGETLESS_CACHE) cannot be created or written."""


def writable_dir(path, option: str = "--out"):
    """Create the output directory `path` (with its parents) before any work; BadFile naming the
    option when a file stands there or it cannot be created."""
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadFile(f"{option} {path}: a file is there, not a directory; choose another path") from None
    except OSError as err:
        raise BadFile(f"{option} {path}: cannot create this directory ({err.strerror or err}); choose a "
                      "writable path") from None
    return path


def one_line(err: BaseException | str) -> str:
    """The message of `err` folded onto one line (multi-line messages joined with '; ')."""
    parts = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(parts) or type(err).__name__


def format_validation_error(err, model: type | None = None) -> str:
    """A pydantic ValidationError as one line per bad field, 'where: what' ("lr: Input should be
    greater than 0", "finetune[0].methods[1].rank: ..."). An unknown field lists the fields allowed
    at that place when `model` (the validated class) is given. One formatter for configs and
    study files alike."""
    lines, listed = [], set()
    for e in err.errors():
        where = ""
        for part in e["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _fields_at(model, e["loc"][:-1])
            near = nearest(str(e["loc"][-1]), allowed)
            msg = "unknown field" + (f"; did you mean {near}?" if near else "")
            if allowed and tuple(allowed) not in listed:  # the allowed fields once, not per bad key
                msg += f"; allowed: {', '.join(allowed)}"
                listed.add(tuple(allowed))
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{where or '(top level)'}: {msg}")
    return "\n".join(lines)


# What people type from Hugging Face Trainer, TRL and PEFT habits -> our field of the same meaning.
CONVENTIONAL_NAMES = {
    "learning_rate": "lr", "max_steps": "steps", "num_train_epochs": "steps", "num_train_steps": "steps",
    "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size", "gradient_accumulation_steps": "grad_accum",
    "warmup_ratio": "warmup", "output_dir": "out_dir", "max_grad_norm": "grad_clip", "r": "lora_rank",
    "lora_r": "lora_rank", "target_modules": "lora_targets", "lora_target_modules": "lora_targets",
    "logging_steps": "log_every", "eval_steps": "eval_every", "save_steps": "save_every",
    "save_total_limit": "keep_checkpoints", "report_to": "trackers", "max_seq_length": "seq_len",
    "max_seq_len": "seq_len", "max_length": "seq_len", "block_size": "seq_len", "model_name_or_path": "base",
    "model": "base", "dataset": "task", "dataset_name": "task", "train_file": "task", "data_path": "task",
    "resume_from_checkpoint": "resume", "torch_compile": "compile", "lr_scheduler_type": "schedule",
    "bf16": "precision", "hidden_dropout": "dropout", "attention_dropout": "dropout", "output": "out_dir",
}


def nearest(name: str, allowed) -> str | None:
    """The allowed name a user most likely meant by `name`: the same words with '_' or '-'
    ('--batch_size'), the Hugging Face Trainer name's counterpart ('learning_rate' -> 'lr'), else
    the closest spelling; None when nothing is close."""
    allowed = list(allowed)
    key = name.lstrip("-").replace("-", "_").lower()
    if key in allowed:
        return key
    if CONVENTIONAL_NAMES.get(key) in allowed:
        return CONVENTIONAL_NAMES[key]
    known = [*allowed, *(k for k, v in CONVENTIONAL_NAMES.items() if v in allowed)]  # 'learning_rat'
    near = difflib.get_close_matches(key, known, n=1)
    return (near[0] if near[0] in allowed else CONVENTIONAL_NAMES[near[0]]) if near else None


def _fields_at(model: type | None, loc: tuple) -> list[str]:
    """The field names of the pydantic model found by following `loc` from `model` (through
    nested models and lists of them); [] when the path leaves the models."""
    import typing

    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = None
        for t in (field.annotation, *typing.get_args(field.annotation)):
            if hasattr(t, "model_fields"):
                model = t
    return list(getattr(model, "model_fields", {})) if model is not None else []
