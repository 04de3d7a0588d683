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
    lines = []
    for e in err.errors():
        where = ""
        for part in e["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _fields_at(model, e["loc"][:-1])
            near = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            msg = "unknown field" + (f"; did you mean {near[0]}?" if near else "")
            msg += f"; allowed: {', '.join(allowed)}" if allowed else ""
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{where or '(top level)'}: {msg}")
    return "\n".join(lines)


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
