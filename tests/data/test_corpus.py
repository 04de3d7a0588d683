"""Corpus specs: the standard library, local files and their errors, hub datasets offline."""

from __future__ import annotations

import json
import sysconfig
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgetless.data import DatasetUnavailable, open_corpus, prepare_pretraining_data
from forgetless.data import hub as hub_mod


def test_stdlib_corpus_has_code_and_prose_and_no_tests():
    corpus = open_corpus("stdlib")
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = list(corpus.documents())
    keys = [d.key for d in docs]
    assert len(keys) == len(set(keys)) > 300
    assert {d.source for d in docs} == {"code", "prose"}
    for doc in docs:
        parts = doc.key.split("/")
        assert not {"test", "tests", "idle_test", "site-packages"} & set(parts[:-1])
        if doc.source == "code":  # the text is the file, verbatim
            assert (root / doc.key).read_text(encoding="utf-8") == doc.text
    import pydoc_data.topics

    prose = {d.key.rsplit("/", 1)[1]: d.text for d in docs if d.source == "prose"}
    assert prose == dict(pydoc_data.topics.topics)
    assert [d.key for d in islice(corpus.documents(), 20)] == keys[:20]  # fixed order


def test_jsonl_parquet_and_txt_documents(tmp_path):
    rows = [{"text": f"document number {i} " * 3, "id": i} for i in range(5)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = list(open_corpus(str(tmp_path / "a.jsonl")).documents())
    assert [d.text for d in docs] == [r["text"] for r in rows]
    pq.write_table(pa.table({"body": [r["text"] for r in rows]}), tmp_path / "b.parquet")
    docs = list(open_corpus(f"{tmp_path / 'b.parquet'}:body").documents())
    assert [d.text for d in docs] == [r["text"] for r in rows]
    paragraphs = [f"Paragraph {i}. " + "word " * 400 for i in range(12)]
    (tmp_path / "c.txt").write_text("\n\n".join(paragraphs))
    docs = list(open_corpus(str(tmp_path / "c.txt")).documents())
    assert 1 < len(docs) < 12 and "\n\n".join(d.text for d in docs) == "\n\n".join(paragraphs)


def test_bad_corpus_inputs_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_corpus(str(tmp_path / "missing"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        list(open_corpus(str(tmp_path / "empty.txt")).documents())
    (tmp_path / "latin.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.txt is not UTF-8.*iconv"):
        list(open_corpus(str(tmp_path / "latin.txt")).documents())
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "hello"}) + "\n")
    with pytest.raises(KeyError, match=r"a.jsonl record 1 has no field 'text'.*\['content'\]"):
        list(open_corpus(str(tmp_path / "a.jsonl")).documents())
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "b.parquet")
    with pytest.raises(KeyError, match=r"b.parquet has no column 'text'; columns: \['body'\]"):
        list(open_corpus(str(tmp_path / "b.parquet")).documents())
    (tmp_path / "data.bin").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="unsupported extension '.bin'"):
        open_corpus(str(tmp_path / "data.bin"))


def test_corpus_without_validation_documents_is_an_error(tmp_path, private_cache):
    from forgetless.data.corpus import split_of

    folder = tmp_path / "few"
    folder.mkdir()
    names = [n for n in (f"d{i}.txt" for i in range(40)) if split_of(n, 0.05) == "train"][:3]
    for name in names:
        (folder / name).write_text("the same words again and again, " * 20)
    with pytest.raises(ValueError, match="no validation documents.*raise val_fraction"):
        prepare_pretraining_data(str(folder), vocab_size=300, progress=False)
    # Nothing half-made is left in the cache the run used (the fixture's, not a sibling folder).
    assert not any(private_cache.glob("shards/*/meta.json"))


def test_hub_dataset_offline_names_dataset_and_local_alternative(monkeypatch):
    monkeypatch.setattr(hub_mod, "hub_reachable", lambda timeout=3.0: False)
    corpus = open_corpus("hf:forgetless-test/not-a-dataset")
    with pytest.raises(DatasetUnavailable) as err:
        next(iter(corpus.documents()))
    message = str(err.value)
    assert "'forgetless-test/not-a-dataset'" in message and "file.jsonl:FIELD" in message
