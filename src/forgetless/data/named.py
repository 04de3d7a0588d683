"""Several corpora as the named sources of one reference: `prose=docs/,code=src/`.

Each part is any corpus spec (a folder, a file, `stdlib`, `hf:NAME`); every document of a part
carries the part's name as its `source`, so forgetting is reported (and a forgetting budget
applies) per named part. Keys are the parts' own, so each part splits into train and held-out
exactly as it does on its own (a base pretrained on one of them keeps its held-out documents).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .documents import Corpus, Document

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def is_named(spec: str) -> bool:
    """Whether a spec names its parts: NAME=SPEC, comma-separated."""
    head = spec.split(",", 1)[0]
    name, sep, rest = head.partition("=")
    return bool(sep and rest and NAME.fullmatch(name.strip()))


@dataclass
class NamedCorpus:
    parts: list[tuple[str, Corpus]]
    spec: str

    @classmethod
    def from_spec(cls, spec: str, open_part: Callable[[str], Corpus]) -> NamedCorpus:
        parts: list[tuple[str, Corpus]] = []
        for item in (p.strip() for p in spec.split(",")):
            name, sep, part = (s.strip() for s in item.partition("="))
            if not sep or not part or not NAME.fullmatch(name):
                raise ValueError(f"corpus {spec!r}: {item!r} is not NAME=SPEC (a name of letters, digits, _ or -, "
                                 "then any corpus spec); e.g. 'prose=docs/,code=src/'")
            if name in {n for n, _ in parts}:
                raise ValueError(f"corpus {spec!r}: the name {name!r} is given twice")
            parts.append((name, open_part(part)))
        return cls(parts=parts, spec=spec)

    def identity(self) -> dict:
        return {"named": [[name, corpus.identity()] for name, corpus in self.parts]}

    def documents(self) -> Iterator[Document]:
        for name, corpus in self.parts:
            for doc in corpus.documents():
                yield Document(doc.key, doc.text, name)
