"""The records the corpus readers yield (a module of its own, so readers and `corpus` do not
import each other)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Document:
    key: str  # stable identity; decides the split
    text: str
    source: str  # "code" | "prose" | "text"


class Corpus(Protocol):
    spec: str

    def identity(self) -> dict:
        """JSON-able description of exactly what `documents()` yields (hashed for the cache)."""
        ...

    def documents(self) -> Iterator[Document]: ...
