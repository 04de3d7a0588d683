"""The paper's datasets from local files written here in exactly the hub schemas."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgetless.data import DatasetUnavailable, adapters, check_answer, load_task
from forgetless.data import hub as hub_mod

N = 300  # enough rows for the 2% validation split to be non-empty


def metamath_rows():
    return [{"query": f"What is {i} plus {i + 1}?", "type": "GSM_Rephrased",
             "original_question": f"What is {i} + {i + 1}?",
             "response": f"We add {i} and {i + 1} to get {2 * i + 1}.\nThe answer is: {2 * i + 1}"}
            for i in range(N)]


def test_metamathqa_jsonl_template_and_answers(tmp_path):
    path = tmp_path / "MetaMathQA-395K.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in metamath_rows()))
    train = load_task("metamathqa", "train", path=path)
    val = load_task("metamathqa", "validation", path=path)
    assert len(train) + len(val) == N and val
    assert {r.prompt for r in train}.isdisjoint(r.prompt for r in val)
    rec = train[0]
    i = int(rec.prompt.split("What is ")[1].split(" ")[0])
    assert rec.prompt == ("Below is an instruction that describes a task. Write a response that "
                          "appropriately completes the request.\n\n### Instruction:\n"
                          f"What is {i} plus {i + 1}?\n\n### Response:\n")
    assert rec.answer == str(2 * i + 1)
    assert check_answer("metamathqa", rec, f"so... The answer is: {2 * i + 1}")
    assert not check_answer("metamathqa", rec, "The answer is: -1")
    assert load_task(f"metamathqa:{path}", "train", n=10, seed=1) == \
        load_task("metamathqa", "train", n=10, seed=1, path=path)


def test_alpaca_json_uses_input_template_only_with_input(tmp_path):
    rows = [{"instruction": f"Name a colour number {i}.", "input": "" if i % 2 else f"ctx {i}",
             "output": f"Colour {i}.", "text": "ignored"} for i in range(N)]
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(rows))
    records = load_task("alpaca", "train", path=path) + load_task("alpaca", "val", path=path)
    assert len(records) == N
    for rec in records:
        i = int(rec.response.split()[1].rstrip("."))
        if i % 2:
            assert "### Input:" not in rec.prompt and rec.prompt.startswith(
                "Below is an instruction that describes a task. Write")
        else:
            assert rec.prompt.endswith(f"### Input:\nctx {i}\n\n### Response:\n")
            assert rec.prompt.startswith("Below is an instruction that describes a task, paired "
                                         "with an input that provides further context.")
        assert rec.answer is None


def test_magicoder_parquet(tmp_path):
    rows = {"instruction": [f"Write code {i}" for i in range(N)],
            "response": [f"def f():\n    return {i}\n" for i in range(N)]}
    path = tmp_path / "magicoder.parquet"
    pq.write_table(pa.table(rows), path)
    rec = load_task("magicoder", "train", n=5, seed=0, path=path)[0]
    assert rec.prompt.startswith("You are an exceptionally intelligent coding assistant")
    assert "@@ Instruction\nWrite code " in rec.prompt and rec.prompt.endswith("@@ Response\n")
    assert len(load_task("magicoder", "train", n=5, seed=0, path=path)) == 5


def test_wrong_schema_names_missing_columns(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text(json.dumps({"prompt": "x", "completion": "y"}) + "\n")
    # A ValueError (the command line prints it as one line, exit 2), naming what was found.
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['instruction', 'output'\].*"
                                         r"columns found: \['completion', 'prompt'\]"):
        load_task("alpaca", path=path)
    with pytest.raises(ValueError, match="lacks column"):
        load_task(f"alpaca:{path}")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl is empty"):
        load_task("alpaca", path=tmp_path / "empty.jsonl")


def test_hub_dataset_offline_says_how_to_use_a_local_file(monkeypatch):
    # A name that is in no cache, so the test does not depend on what this machine downloaded.
    monkeypatch.setattr(hub_mod, "hub_reachable", lambda timeout=3.0: False)
    fake = adapters.Adapter("forgetless-test/no-alpaca", ("instruction", "input", "output"),
                            adapters.ADAPTERS["alpaca"].to_record)
    monkeypatch.setitem(adapters.ADAPTERS, "alpaca", fake)
    with pytest.raises(DatasetUnavailable, match=r"(?s)'forgetless-test/no-alpaca'.*path='FILE'"):
        load_task("alpaca")
    with pytest.raises(ValueError):  # also a ValueError: one line on the command line, exit 2
        load_task("alpaca")


def test_alpaca_csv_without_input_column_and_mapped_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("question,reply\n" + "".join(f"Say {i}.,\"{i}, done\"\n" for i in range(N)))
    records = load_task(f"alpaca:{path}", "train", columns="question=instruction,reply=output")
    records += load_task("alpaca", "validation", path=path,
                         columns={"question": "instruction", "reply": "output"})
    assert len(records) == N
    rec = next(r for r in records if r.response == "7, done")
    assert rec.prompt == ("Below is an instruction that describes a task. Write a response that "
                          "appropriately completes the request.\n\n### Instruction:\nSay 7.\n\n"
                          "### Response:\n")
    with pytest.raises(ValueError, match="allowed targets: messages, prompt"):
        load_task(f"alpaca:{path}", columns="question=query")
