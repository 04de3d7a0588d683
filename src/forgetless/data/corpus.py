"""Pretraining corpora: the embedded standard-library corpus, and the spec strings that name others.

A corpus is a deterministic stream of `Document`s. Each document carries a stable `key` (its
relative path, `path:line`, `dataset:index`) from which its split is derived by hash, and a
`source` tag ("code", "prose", "text") so forgetting can later be broken down by source.

Spec strings accepted by `open_corpus`:
    "stdlib"                    the running interpreter's standard library (no download)
    "path/to/folder"            every text file below it (one document per file)
    "file.txt"                  one text file, cut at blank lines into ~8 KB documents
    "file.jsonl[:field]"        one document per line, text in `field` (default "text")
    "file.parquet[:column]"     one document per row, text in `column` (default "text")
    "hf:NAME[:column]"          a Hugging Face dataset, streamed (e.g. "hf:Skylion007/openwebtext")
    "NAME=SPEC,NAME=SPEC"       several of the above, each document's source the part's NAME
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .cache import key_fraction, stable_hash
from .documents import Corpus, Document
from .hub import HubCorpus
from .local import LocalCorpus
from .named import NamedCorpus, is_named

SPLITS = ("train", "val")
DEFAULT_VAL_FRACTION = 0.05


def split_of(key: str, val_fraction: float) -> str:
    """'val' for a fixed, hash-chosen `val_fraction` of keys, else 'train'."""
    return "val" if key_fraction(key) < val_fraction else "train"


def iter_split(corpus: Corpus, split: str, val_fraction: float = DEFAULT_VAL_FRACTION,
               max_bytes: int | None = None) -> Iterator[Document]:
    """The documents of one split, stopping after `max_bytes` of text in that split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    seen = 0
    for doc in corpus.documents():
        if split_of(doc.key, val_fraction) != split:
            continue
        if max_bytes is not None and seen >= max_bytes:
            return
        seen += len(doc.text.encode("utf-8", "replace"))
        yield doc


# ---------------------------------------------------------------- the standard-library corpus

# Folders that are tests, third-party code or caches, not the library itself.
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
# Generated tables (codec maps, keyword lists) teach a model nothing about language.
_GENERATED = re.compile(rb"generated|DO NOT EDIT", re.IGNORECASE)
_MAX_FILE_BYTES = 400_000  # the few larger files are data (pydoc topics) or generated


@dataclass
class StdlibCorpus:
    """The `.py` sources of the running interpreter's standard library (docstrings and comments
    included; source "code") plus the English reference text of `pydoc_data.topics` (one
    document per topic; source "prose"). Documents come in a fixed hash order so that any prefix
    (a `max_bytes` limit) is a representative sample of both sources."""

    root: Path = field(default_factory=lambda: Path(sysconfig.get_paths()["stdlib"]))
    spec: str = "stdlib"

    def _files(self) -> list[Path]:
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in filenames:
                path = Path(dirpath) / name
                if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                    rel = path.relative_to(self.root).as_posix()
                    if rel != "pydoc_data/topics.py":  # read as prose below
                        files.append(path)
        return sorted(files)

    def identity(self) -> dict:
        listing = [(p.relative_to(self.root).as_posix(), p.stat().st_size) for p in self._files()]
        return {"kind": "stdlib", "python": sys.version.split()[0], "root": str(self.root),
                "files": stable_hash(listing), "topics": stable_hash(sorted(_topics().items()))}

    def documents(self) -> Iterator[Document]:
        docs: list[tuple[str, Path | str, str]] = []
        for path in self._files():
            docs.append((path.relative_to(self.root).as_posix(), path, "code"))
        for name, text in sorted(_topics().items()):
            docs.append((f"pydoc_data/topics/{name}", text, "prose"))
        docs.sort(key=lambda d: hashlib.sha1(d[0].encode()).digest())
        for key, payload, source in docs:
            if isinstance(payload, str):
                yield Document(key, payload, source)
                continue
            raw = payload.read_bytes()
            if not raw.strip() or len(raw) > _MAX_FILE_BYTES or _GENERATED.search(raw[:600]):
                continue
            try:
                yield Document(key, raw.decode("utf-8"), source)
            except UnicodeDecodeError:
                continue  # a handful of legacy-encoded files; not worth guessing codecs


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # stripped-down Python builds drop pydoc_data
        return {}
    return dict(topics)


# ---------------------------------------------------------------- spec strings

def open_corpus(spec: str) -> Corpus:
    """Turn a corpus spec string (see the module docstring) into a `Corpus`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("corpus must be 'stdlib', a path, 'file.jsonl:field' or 'hf:NAME'; got "
                         f"{spec!r}")
    if spec == "stdlib":
        return StdlibCorpus()
    if is_named(spec) and not Path(spec).expanduser().exists():  # prose=docs/,code=src/
        return NamedCorpus.from_spec(spec, open_corpus)
    if spec.startswith("hf:"):
        name, _, column = spec[3:].partition(":")
        return HubCorpus(name=name, column=column or "text", spec=spec)
    return LocalCorpus.from_spec(spec)


def check_sources(corpus: str | None = None, tasks: list[str] = (), tokenizer: str | None = None) -> list[str]:
    """What can be found wrong with a corpus spec and task names without reading their data: a
    local file or folder that is missing (or of an unsupported kind), and a dataset task's file
    ("alpaca:/data/a.json") or a tokenizer folder that is missing. Hub names are left to the hub. A study
    checks these before any work (a missing corpus was found after the bases had trained)."""
    problems = []
    if corpus is not None and corpus != "stdlib" and not str(corpus).startswith("hf:"):
        try:
            LocalCorpus.from_spec(corpus)._files()
        except (OSError, ValueError) as err:
            problems.append(str(err).splitlines()[0])
    from forgetless.data.user_data import is_user_data

    for task in tasks:
        prefix, sep, rest = str(task).partition(":")
        if is_user_data(str(task)) and prefix != "hf" and not Path(task).expanduser().is_file():
            problems.append(f"task {task!r}: no such file")  # the user's own data file
        elif sep and prefix != "hf" and rest and not Path(rest).expanduser().exists():
            problems.append(f"task {task!r}: no such file {rest}")
    if tokenizer and str(tokenizer).startswith(("/", ".", "~")) and not Path(tokenizer).expanduser().exists():
        problems.append(f"tokenizer {tokenizer!r}: no such folder (a hub tokenizer is named org/name)")
    return problems
