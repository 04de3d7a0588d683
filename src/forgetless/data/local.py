"""Local text corpora: a folder of files, a .txt, a .jsonl/.json or a .parquet with a text column.

Every failure names the file (and line or column) and says what would fix it, because a corpus
problem found after an hour of tokenising is an hour lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .cache import stable_hash
from .documents import Document

RECORD_EXTS = (".jsonl", ".json", ".parquet")
CODE_EXTS = (".py", ".c", ".h", ".cpp", ".rs", ".go", ".js", ".ts", ".java", ".sh")
TEXT_EXTS = (".txt", ".md", ".rst", ".tex", ".html", ".xml", ".csv") + CODE_EXTS
_TXT_DOC_BYTES = 8192  # a lone .txt is cut into documents of about this size, at blank lines


@dataclass
class LocalCorpus:
    path: Path
    column: str = "text"
    spec: str = ""

    @classmethod
    def from_spec(cls, spec: str) -> LocalCorpus:
        path, column = Path(spec).expanduser(), "text"
        if not path.exists():  # "file.jsonl:field" (the colon is ours, not the filename's)
            head, sep, tail = spec.rpartition(":")
            if sep and Path(head).expanduser().exists():
                path, column = Path(head).expanduser(), tail
        if not path.exists():
            raise FileNotFoundError(
                f"corpus {spec!r}: no such file or folder. Give 'stdlib', a folder, a .txt, "
                "'file.jsonl:field', 'file.parquet:column' or 'hf:NAME'.")
        if path.is_file() and path.suffix not in RECORD_EXTS + TEXT_EXTS:
            raise ValueError(f"corpus file {path}: unsupported extension {path.suffix!r}; "
                             f"allowed: {', '.join(RECORD_EXTS + TEXT_EXTS)}")
        return cls(path=path.resolve(), column=column, spec=spec)

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        files = [p for p in sorted(self.path.rglob("*")) if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
                 and p.suffix in RECORD_EXTS + TEXT_EXTS]
        if not files:
            raise ValueError(f"corpus folder {self.path} holds no readable files; allowed "
                             f"extensions: {', '.join(RECORD_EXTS + TEXT_EXTS)}")
        return files

    def identity(self) -> dict:
        listing = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self._files()]
        return {"kind": "local", "path": str(self.path), "column": self.column,
                "files": stable_hash(listing)}

    def documents(self) -> Iterator[Document]:
        base = self.path if self.path.is_dir() else self.path.parent
        for path in self._files():
            rel = path.relative_to(base).as_posix()
            if path.stat().st_size == 0:
                raise ValueError(f"corpus file {path} is empty; remove it or fill it")
            if path.suffix in (".jsonl", ".json"):
                yield from _json_docs(path, rel, self.column)
            elif path.suffix == ".parquet":
                yield from _parquet_docs(path, rel, self.column)
            elif self.path.is_file():
                yield from _txt_docs(path, rel)
            else:
                source = "code" if path.suffix in CODE_EXTS else "text"
                yield Document(rel, _read_text(path), source)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"corpus file {path} is not UTF-8 text (byte {err.start}); convert it, "
                         "e.g. `iconv -f latin1 -t utf-8`, or move it out of the corpus") from err
    except OSError as err:
        raise ValueError(f"corpus file {path} cannot be read: {err.strerror}") from err


def _txt_docs(path: Path, rel: str) -> Iterator[Document]:
    """Paragraphs gathered into ~8 KB documents, so one long text still gets a validation part."""
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"corpus file {path} holds only whitespace")
    buf: list[str] = []
    size, index = 0, 0
    for para in re.split(r"\n\s*\n", text):
        if not para.strip():
            continue
        buf.append(para)
        size += len(para)
        if size >= _TXT_DOC_BYTES:
            yield Document(f"{rel}#{index}", "\n\n".join(buf), "text")
            buf, size, index = [], 0, index + 1
    if buf:
        yield Document(f"{rel}#{index}", "\n\n".join(buf), "text")


def _text_field(row: dict, column: str, where: str) -> str:
    if column not in row:
        raise KeyError(f"{where} has no field {column!r}; fields present: {sorted(row)}. "
                       f"Name the text field as 'FILE:FIELD'.")
    value = row[column]
    if not isinstance(value, str):
        raise TypeError(f"{where} field {column!r} is {type(value).__name__}, not text")
    return value


def _json_docs(path: Path, rel: str, column: str) -> Iterator[Document]:
    for i, row in enumerate(read_records(path)):
        text = _text_field(row, column, f"{path} record {i + 1}")
        if text.strip():
            yield Document(f"{rel}:{i}", text, "text")


def _parquet_docs(path: Path, rel: str, column: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ValueError(f"corpus file {path} is not a readable parquet file: {err}") from err
    names = file.schema_arrow.names
    if column not in names:
        raise KeyError(f"{path} has no column {column!r}; columns: {names}. "
                       "Name the text column as 'FILE.parquet:COLUMN'.")
    i = 0
    for batch in file.iter_batches(columns=[column], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield Document(f"{rel}:{i}", text, "text")
            i += 1


def read_records(path: Path) -> Iterator[dict]:
    """Rows of a .jsonl (one object per line), a .json (a list of objects) or a .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; it should hold one JSON object per line (.jsonl), "
                         "a JSON list of objects (.json) or a parquet table")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    if path.suffix == ".json":
        try:
            rows = json.loads(_read_text(path))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}") from err
        if not isinstance(rows, list):
            raise ValueError(f"{path} must hold a JSON list of objects, got {type(rows).__name__}")
        yield from rows
        return
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} line {lineno} is not UTF-8; convert the file") from err
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {lineno} is not valid JSON: {err.msg}") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {lineno} is not a JSON object")
            yield row
