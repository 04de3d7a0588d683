"""A user's own data: every format from every file type written here, column mapping, the chat
template with a hand-built label mask, the held-out split, and errors that say what was found."""

from __future__ import annotations

import csv
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgetless.data import (
    IGNORE_INDEX,
    SFTCollator,
    SFTRecord,
    TaskDataUnavailable,
    check_answer,
    load_task,
)
from forgetless.data import hub as hub_mod
from forgetless.data.user_data import VAL_MAX, validation_mask

N = 40  # records per file: 8 held out (the minimum), 32 for training
HEAD = ("Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n")


def write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return path


ROWS = {
    "chat": lambda i: {"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                    {"role": "assistant", "content": f"It is {i + 1}."}]},
    "prompt-completion": lambda i: {"prompt": f"Count to {i}:", "completion": f" 1 .. {i}"},
    "alpaca": lambda i: {"instruction": "Double the number.", "input": str(i), "output": str(2 * i)},
    "text": lambda i: {"text": f"Line {i} of some plain text."},
}
# (prompt, response, messages) each row must give, written out by hand.
EXPECTED = {
    "chat": lambda i: (f"{HEAD}### Instruction:\nWhat is {i} + 1?\n\n### Response:\n", f"It is {i + 1}.",
                       (("user", f"What is {i} + 1?"), ("assistant", f"It is {i + 1}."))),
    "prompt-completion": lambda i: (f"Count to {i}:", f" 1 .. {i}",
                                    (("user", f"Count to {i}:"), ("assistant", f" 1 .. {i}"))),
    "alpaca": lambda i: (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
        f"Double the number.\n\n### Input:\n{i}\n\n### Response:\n", str(2 * i),
        (("user", f"Double the number.\n\n{i}"), ("assistant", str(2 * i)))),
    "text": lambda i: ("", f"Line {i} of some plain text.", None),
}
CASES = [(fmt, ext) for fmt in ROWS for ext in ("jsonl", "json", "parquet", "csv")
         if not (fmt == "chat" and ext == "csv")]  # a csv cell holds no list of messages


@pytest.mark.parametrize("fmt,ext", CASES)
def test_each_format_from_each_file_type(tmp_path, fmt, ext):
    path = write(tmp_path / f"data.{ext}", [ROWS[fmt](i) | {"extra": "ignored"} for i in range(N)])
    train, val = load_task(str(path), "train"), load_task(str(path), "validation")
    assert (len(train), len(val)) == (N - 8, 8)
    got = {(r.prompt, r.response, r.messages) for r in train + val}
    assert got == {EXPECTED[fmt](i) for i in range(N)}
    assert all(r.answer is None for r in train)


def test_chat_multi_turn_system_and_sharegpt_spelling(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "Be brief."},
                               {"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": "hello"},
                               {"from": "human", "value": "bye"}, {"from": "gpt", "value": f"bye {i}"},
                               {"from": "human", "value": "dangling"}]} for i in range(N)]
    path = write(tmp_path / "sharegpt.jsonl", rows)
    recs = [r for split in ("train", "validation")
            for r in load_task(str(path), split, columns="conversations=messages")]
    rec = next(r for r in recs if "hi 3\n" in r.prompt)
    assert rec.messages == (("system", "Be brief."), ("user", "hi 3"), ("assistant", "hello"),
                            ("user", "bye"), ("assistant", "bye 3"))  # the dangling turn dropped
    # Without a template: the system turn replaces Alpaca's opening, the last reply is the response.
    assert rec.prompt == ("Be brief.\n\n### Instruction:\nhi 3\n\n### Response:\nhello\n\n"
                          "### Instruction:\nbye\n\n### Response:\n")
    assert rec.response == "bye 3"


def test_prompt_completion_in_trl_conversational_form(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}],
             "completion": [{"role": "assistant", "content": f"a{i}"}]} for i in range(N)]
    recs = load_task(str(write(tmp_path / "conv.jsonl", rows)), "validation")
    assert all(r.messages == (("user", r.messages[0][1]), ("assistant", "a" + r.messages[0][1][1:]))
               for r in recs)


def test_column_mapping_string_list_and_replacing_a_column(tmp_path):
    rows = [{"question": f"q{i}", "reply": f"r{i}", "prompt": "not this one"} for i in range(N)]
    path = str(write(tmp_path / "mine.jsonl", rows))
    a = load_task(path, columns="question=prompt,reply=completion")
    b = load_task(path, columns=["question=prompt", "reply=completion"])
    c = load_task(path, columns={"question": "prompt", "reply": "completion"})
    assert a == b == c and {(r.prompt, r.response) for r in a} <= {(f"q{i}", f"r{i}") for i in range(N)}
    with pytest.raises(ValueError, match=r"no column\(s\) \['asked'\]; columns found: "
                                         r"\['prompt', 'question', 'reply'\]"):
        load_task(path, columns="asked=prompt")
    with pytest.raises(ValueError, match="allowed targets: messages, prompt, completion"):
        load_task(path, columns="question=query")
    with pytest.raises(ValueError, match="not DATA_COLUMN=FORMAT_COLUMN"):
        load_task(path, columns="question")


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A small BPE with three role tokens and a template that wraps each turn in them."""
    from forgetless.data import train_bpe

    rng = random.Random(0)
    words = "hello hi world what is the answer brief be bye one two three".split()
    tok = train_bpe([" ".join(rng.choice(words) for _ in range(200)) for _ in range(20)], 300)
    tok.add_special_tokens({"additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>",
                                                          "<|end|>"]})
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    return tok


def test_chat_template_labels_exactly_the_assistant_turns(chat_tokenizer):
    tok = chat_tokenizer
    messages = (("system", "be brief"), ("user", "what is one"), ("assistant", "one"),
                ("user", "and two"), ("assistant", "two three"))
    # Expected, built piece by piece: special tokens split the text, so each piece tokenises alone.
    pieces = [("<|system|>\nbe brief<|end|>\n<|user|>\nwhat is one<|end|>\n<|assistant|>\n", False),
              ("one<|end|>\n", True),
              ("<|user|>\nand two<|end|>\n<|assistant|>\n", False),
              ("two three<|end|>\n", True)]
    ids, labels = [], []
    for text, learn in pieces:
        for special in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
            text = text.replace(special, f"\0{special}\0")
        part = [t for s in text.split("\0") if s for t in tok(s, add_special_tokens=False)["input_ids"]]
        ids += part
        labels += part if learn else [IGNORE_INDEX] * len(part)
    batch = SFTCollator(tok, seq_len=200)([SFTRecord("plain prompt", "plain reply", None, messages)])
    assert batch["input_ids"][0].tolist() == ids
    assert batch["labels"][0].tolist() == labels
    assert ids[-2] == tok.convert_tokens_to_ids("<|end|>")  # the template ends the turn, no EOS
    # Without the template (asked, or a tokenizer without one) the plain rendering is used.
    plain = SFTCollator(tok, seq_len=200, chat_template=False)([SFTRecord("a", " b", None, messages)])
    assert plain["input_ids"][0].tolist() == tok("a")["input_ids"] + tok(" b")["input_ids"] + [tok.eos_token_id]


def test_chat_template_on_a_file_and_prompt_ids_end_at_the_reply(tmp_path, chat_tokenizer):
    rows = [{"prompt": f"what is {i}", "completion": "one", "answer": i} for i in range(N)]
    recs = load_task(str(write(tmp_path / "pc.parquet", rows)), "validation")
    batch = SFTCollator(chat_tokenizer, seq_len=64)(recs)
    for rec, ids, lab in zip(recs, batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        first = next(j for j, t in enumerate(lab) if t != IGNORE_INDEX)
        assert chat_tokenizer.decode(ids[:first]) == f"<|user|>\n{rec.prompt}<|end|>\n<|assistant|>\n"
        assert chat_tokenizer.decode([t for t in lab if t != IGNORE_INDEX]) == "one<|end|>\n"
        assert rec.answer == rec.prompt.split()[-1]


def test_held_out_split_deterministic_disjoint_order_free_and_sized(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(300)] * 2  # each row twice
    path = str(write(tmp_path / "a.jsonl", rows))
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    other = str(write(tmp_path / "b.jsonl", shuffled))
    train, val = load_task(path, "train"), load_task(path, "validation")
    assert val == load_task(path, "validation")
    assert set(val) == set(load_task(other, "validation"))  # the split follows content, not order
    assert set(train).isdisjoint(val)  # duplicates always land on the same side
    assert len(set(val)) == 15 and len(val) == 30  # 5% of 300 distinct, each twice
    # n picks a seeded sample inside the split; the split itself never moves with the seed.
    assert set(load_task(path, "validation", n=5, seed=1)) <= set(val)
    assert load_task(path, "train", n=5, seed=1) != load_task(path, "train", n=5, seed=2)
    # Sizes: 5%, at least 8 (at most half), at most 512.
    for n, k in ((4, 2), (10, 5), (100, 8), (1000, 50), (20000, VAL_MAX)):
        recs = [SFTRecord(f"p{i}", "r") for i in range(n)]
        assert sum(validation_mask(recs)) == k


def test_exact_match_on_the_answer_column(tmp_path):
    rows = [{"prompt": f"{i} + {i} =", "completion": f" {2 * i}", "answer": 2 * i} for i in range(N)]
    path = str(write(tmp_path / "sums.csv", rows))
    rec = load_task(path, "validation")[0]
    want = rec.answer
    assert check_answer(path, rec, f" {want}\n")
    assert check_answer(path, rec, f"Let me add.\nThe sum:  {want} ") is False
    assert check_answer(path, rec, f"Let me add.\n{want}")
    assert not check_answer(path, rec, f"{want}0")


def test_wrong_schema_one_line_naming_columns_and_formats(tmp_path):
    path = str(write(tmp_path / "odd.jsonl", [{"question": "q", "reply": "r"}] * 3))
    with pytest.raises(ValueError) as err:
        load_task(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "columns ['question', 'reply']" in msg
    assert "messages (chat), prompt+completion, instruction+output[+input] (Alpaca), text" in msg


def test_file_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unsupported extension '\.txt'; allowed: \.jsonl, \.json, "
                                         r"\.parquet, \.csv"):
        load_task(str(tmp_path / "notes.txt"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        load_task(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"unknown task 'arithmetic'.*or give a data file"):
        load_task("arithmetic")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(ValueError, match="bad.jsonl could not be read as json"):
        load_task(str(tmp_path / "bad.jsonl"))
    rows = [{"messages": [{"role": "user", "content": "x"}]}] * 3
    with pytest.raises(ValueError, match="record 1: the conversation has no assistant turn"):
        load_task(str(write(tmp_path / "noreply.jsonl", rows)))
    rows = [{"messages": [{"role": "robot", "content": "x"}]}] * 3
    with pytest.raises(ValueError, match="role 'robot'; allowed: system, user, assistant"):
        load_task(str(write(tmp_path / "robot.jsonl", rows)))
    with pytest.raises(ValueError, match="at least 2"):
        load_task(str(write(tmp_path / "one.jsonl", [{"text": "alone"}])))
    with pytest.raises(ValueError, match="all 3 records are identical"):
        load_task(str(write(tmp_path / "same.jsonl", [{"text": "again"}] * 3)))
    with pytest.raises(ValueError, match="column 'completion' is empty"):
        load_task(str(write(tmp_path / "gap.csv", [{"prompt": "a", "completion": ""}] * 3)))


def test_chat_template_asked_of_a_tokenizer_without_one(small_tokenizer):
    with pytest.raises(ValueError, match="has no chat_template"):
        SFTCollator(small_tokenizer, seq_len=32, chat_template=True)


def test_hub_dataset_not_cached_is_a_one_line_value_error(monkeypatch):
    monkeypatch.setattr(hub_mod, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(TaskDataUnavailable) as err:
        load_task("hf:forgetless-test/no-such-chat-data")
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    assert "'forgetless-test/no-such-chat-data'" in str(err.value)


def test_finetune_cli_on_a_chat_jsonl(tmp_path, chat_tokenizer, text_folder):
    """`forgetless finetune` end to end: a tiny Llama whose tokenizer has a chat template, a chat
    file written here, 4 steps; then the same command with a wrong schema and with alpaca:FILE."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from typer.testing import CliRunner

    from forgetless.cli import app

    torch.manual_seed(0)
    base = tmp_path / "base"
    cfg = LlamaConfig(vocab_size=len(chat_tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=128, eos_token_id=chat_tokenizer.eos_token_id,
                      bos_token_id=chat_tokenizer.bos_token_id, pad_token_id=chat_tokenizer.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(base)
    chat_tokenizer.save_pretrained(base)
    rows = [{"messages": [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": f"what is {w}"},
                          {"role": "assistant", "content": f"{w} is the answer"}]}
            for w in ("one two three hello world bye hi be".split() * 5)]
    for i, row in enumerate(rows):
        row["messages"][1]["content"] += f" {i}"  # 40 distinct records
    data = write(tmp_path / "my_chat.jsonl", rows)
    (tmp_path / "run.yaml").write_text("threads: 1\nforget_seq_len: 32\n")
    common = ["--method", "full", "--optimizer", "adamw", "--lr", "1e-3", "--steps", "4",
              "--eval-every", "2", "--batch-size", "4", "--seq-len", "64", "--eval-n", "8",
              "--eval-tokens", "256", "--forget-corpus", str(text_folder), "--no-progress",
              "--config", str(tmp_path / "run.yaml")]
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", str(base), "--task", str(data), *common,
                                 "--out", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    points = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    evals = [p for p in points if p.get("kind") == "eval"]
    assert [p["step"] for p in evals] == [0, 2, 4]
    assert all(0 < p["learning"] < 20 for p in evals)
    assert evals[-1]["learning"] < evals[0]["learning"]  # lr 1e-3 on 32 records: it learns
    # Step 0 is the base: its learning loss is the mean over the held-out replies' tokens, the
    # conversation built here piece by piece (the special tokens split the text).
    model = LlamaForCausalLM.from_pretrained(base).eval()
    total, count = 0.0, 0
    for rec in load_task(str(data), "validation"):
        user, reply = rec.messages[1][1], rec.messages[2][1]
        pieces = [(["<|system|>"], False), (["\nbe brief"], False), (["<|end|>"], False), (["\n"], False),
                  (["<|user|>"], False), ([f"\n{user}"], False), (["<|end|>"], False), (["\n"], False),
                  (["<|assistant|>"], False), (["\n"], False), ([reply, "<|end|>", "\n"], True)]
        ids, learn = [], []
        for texts, trained in pieces:
            for text in texts:
                part = chat_tokenizer(text, add_special_tokens=False)["input_ids"]
                ids += part
                learn += [trained] * len(part)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        for t in range(1, len(ids)):
            if learn[t]:
                total -= logp[t - 1, ids[t]].item()
                count += 1
    assert evals[0]["learning"] == pytest.approx(total / count, rel=1e-4)
    # A wrong schema, and alpaca:FILE with other columns: one line, exit 2, no traceback.
    odd = write(tmp_path / "odd.jsonl", [{"question": "q", "reply": "r"}] * 3)
    for task in (str(odd), f"alpaca:{data}"):
        result = runner.invoke(app, ["finetune", str(base), "--task", task, *common,
                                     "--out", str(tmp_path / f"bad{len(task)}")])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "columns" in result.output, result.output
    # The same odd file with --columns mapping its columns to prompt/completion trains.
    odd = write(tmp_path / "odd40.jsonl", [{"question": f"q {i}", "reply": f"r {i}"} for i in range(40)])
    result = runner.invoke(app, ["finetune", str(base), "--task", str(odd), "--columns",
                                 "question=prompt,reply=completion", *common, "--out", str(tmp_path / "mapped")])
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "mapped" / "config.yaml").read_text()
    assert "question: prompt" in saved and "reply: completion" in saved


def test_template_that_rewrites_past_replies_learns_the_last_one(chat_tokenizer):
    """Like Qwen3's (which drops earlier replies' reasoning): an earlier reply renders differently
    once the conversation goes on, so only the last reply has an exact boundary."""
    import copy

    tok = copy.deepcopy(chat_tokenizer)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{% if m['role'] == 'assistant' "
                         "and not loop.last %}one{% else %}{{ m['content'] }}{% endif %}<|end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    messages = (("user", "what is one"), ("assistant", "two"), ("user", "and"), ("assistant", "three"))
    batch = SFTCollator(tok, seq_len=200)([SFTRecord("p", "r", None, messages)])
    learned = [t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX]
    assert tok.decode(learned) == "three<|end|>\n"


def test_hub_dataset_goes_through_the_same_detection(monkeypatch):
    import datasets

    rows = [{"instruction": f"Echo {i}.", "output": f"{i}"} for i in range(N)]
    seen = []

    def fake(name, split="train", streaming=False, config=None, local_hint=""):
        seen.append((name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(hub_mod, "load_hub_dataset", fake)
    recs = load_task("hf:someone/echo", "train") + load_task("hf:someone/echo", "validation")
    assert seen == [("someone/echo", "train")] * 2
    assert {r.response for r in recs} == {str(i) for i in range(N)}
    assert all(r.prompt.endswith(f"### Instruction:\nEcho {r.response}.\n\n### Response:\n") for r in recs)
