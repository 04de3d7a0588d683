"""Hugging Face datasets, streamed so that a 40 GB corpus (OpenWebText) is never held in memory.

Offline (no network and nothing in the local cache) every loader raises `DatasetUnavailable`
naming the dataset and how to point forgetless at local files instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from .documents import Document


class DatasetUnavailable(RuntimeError):
    """A hub dataset could not be loaded (offline, not cached, or no such dataset)."""


def load_hub_dataset(name: str, split: str = "train", streaming: bool = False,
                     config: str | None = None, local_hint: str = "") -> Any:
    """`datasets.load_dataset` with an error that says what is missing and what to do instead."""
    try:
        import datasets

        with _offline_unless_reachable() as offline:
            # Streaming reads remote files; offline only a cached (downloaded) copy can serve,
            # and that one is a memory-mapped Arrow table, so still not held in memory.
            return datasets.load_dataset(name, config, split=split,
                                         streaming=streaming and not offline)
    except Exception as err:  # connection, offline-mode and not-found errors differ by version
        raise DatasetUnavailable(
            f"Hugging Face dataset {name!r} (split {split!r}) could not be loaded: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
            f"It is neither reachable on the hub nor in the local cache. Either download it once "
            f"with network (`datasets.load_dataset({name!r})`), or point forgetless at local "
            f"files instead{local_hint}."
        ) from err


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub be opened? (Assumed yes behind a configured proxy.)"""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_unless_reachable():
    """Without network, switch the hub libraries to offline mode for this call: a cached dataset
    then loads from the cache at once, a missing one fails at once, instead of ~30 s of retries."""
    import datasets.config
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield constants.HF_HUB_OFFLINE
        return
    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


@dataclass
class HubCorpus:
    name: str
    column: str = "text"
    split: str = "train"
    spec: str = ""

    def identity(self) -> dict:
        # A hub dataset's content is named by its id; pin a revision upstream if that matters.
        return {"kind": "hf", "name": self.name, "column": self.column, "split": self.split}

    def documents(self) -> Iterator[Document]:
        stream = load_hub_dataset(
            self.name, self.split, streaming=True,
            local_hint=": a folder of text files, 'file.txt', 'file.jsonl:FIELD' or "
                       "'file.parquet:COLUMN' as the corpus")
        for i, row in enumerate(stream):
            if i == 0 and self.column not in row:
                raise KeyError(f"dataset {self.name!r} has no column {self.column!r}; columns: "
                               f"{sorted(row)}. Name it as 'hf:{self.name}:COLUMN'.")
            text = row[self.column]
            if isinstance(text, str) and text.strip():
                yield Document(f"{self.name}:{i}", text, "text")
