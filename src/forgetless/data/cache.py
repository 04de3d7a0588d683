"""Where forgetless keeps what it builds once (tokenizers, token shards), and how it names it.

Everything cached is keyed by a hash of what produced it (corpus identity + settings), so a change
of either gives a new directory and nothing stale is ever reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from forgetless.errors import CacheError


def cache_dir() -> Path:
    """The cache root: `$FORGETLESS_CACHE` when set, else `~/.cache/forgetless` (created);
    CacheError naming FORGETLESS_CACHE when it cannot be created or written."""
    root = os.environ.get("FORGETLESS_CACHE") or str(Path.home() / ".cache" / "forgetless")
    return writable_dir(Path(root).expanduser(), "the cache directory (FORGETLESS_CACHE)")


def writable_dir(path: Path, what: str) -> Path:
    """`path`, created if missing; CacheError saying what to do when it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
    except OSError as err:
        fix = f"choose a writable {what}" if what.startswith("--") else "set FORGETLESS_CACHE to a writable directory"
        raise CacheError(f"{what} {path} cannot be written ({err.strerror or err}); {fix}") from None
    return path


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able object with sorted keys: equal settings give equal names."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def key_fraction(key: str) -> float:
    """Map a string to [0, 1) by its SHA-1, uniformly and the same on every machine and run.

    Used for the train/validation split: a document goes to validation when
    `key_fraction(key) < val_fraction`, so the split depends on the document's identity only
    (not on the order the corpus is read in, nor on Python's per-process `hash` salt).
    """
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def publish_dir(tmp: Path, final: Path) -> Path:
    """Rename a finished temporary directory into place; if another process won the race, keep
    theirs (same hash, same content) and drop ours. Readers therefore never see a partial dir."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final
