"""Errors a user can cause and fix: the command line prints their message as one line, exit code 2.

Anything else that escapes a command is a bug and keeps its traceback. A box raises one of these
(or a subclass that is also the matching builtin, so library callers catching ValueError or OSError
keep working) with a message that names the file or field and says what to do.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user handed in (a path, a file, a value) that forgetless cannot use."""


class NoCheckpoint(UserError, FileNotFoundError):
    """A model path that does not exist or holds no model."""


class CorruptCheckpoint(UserError, ValueError):
    """A model or trainer-state file that is truncated or unreadable."""


class BadFile(UserError, ValueError):
    """A file the user named (a config, a reference, a data file) that is missing or unreadable."""


class CacheError(UserError, OSError):
    """The cache directory ($FORGETLESS_CACHE) cannot be created or written."""


def one_line(err: BaseException | str) -> str:
    """The message of `err` folded onto one line (multi-line messages joined with '; ')."""
    parts = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(parts) or type(err).__name__
