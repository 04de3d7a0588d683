"""The `forgetless data` commands, through the real command-line app."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from forgetless.cli import app


def test_data_tasks_prints_records():
    result = CliRunner().invoke(app, ["data", "tasks", "arith", "--n", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert len(rows) == 2 and all(r["response"].endswith(f"The answer is: {r['answer']}") for r in rows)


def test_data_prepare_on_a_folder(text_folder, private_cache):
    args = ["data", "prepare", "--corpus", str(text_folder), "--vocab-size", "300",
            "--val-fraction", "0.2", "--workers", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "uint16" in result.output
    assert len(list((private_cache / "shards").glob("*/meta.json"))) == 1


def test_data_prepare_reports_bad_corpus(tmp_path):
    result = CliRunner().invoke(app, ["data", "prepare", "--corpus", str(tmp_path / "nope")])
    flat = " ".join(result.output.replace("│", " ").split())  # undo rich's box and wrapping
    assert result.exit_code != 0 and "no such file or folder" in flat


QA = [{"question": f"what is {i} + {i + 1}?", "reply": f"It is {2 * i + 1}.", "answer": str(2 * i + 1)}
      for i in range(20)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_data_tasks_previews_a_users_file_with_a_column_mapping(tmp_path, private_cache):
    data = _jsonl(tmp_path / "qa.jsonl", QA)
    args = ["data", "tasks", str(data), "--columns", "question=prompt,reply=completion",
            "--n", "3", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    by_question = {r["question"]: r for r in QA}
    assert len(rows) == 3
    for row in rows:  # each printed record is one of the file's, its columns where the mapping says
        source = by_question[row["prompt"]]
        assert row["response"] == source["reply"] and row["answer"] == source["answer"]
        assert row["messages"] == [["user", source["question"]], ["assistant", source["reply"]]]
    assert "prompt-completion format, 20 records" in result.stderr  # the header, off stdout
    assert "renamed: question=prompt, reply=completion" in result.stderr


def test_data_tasks_shows_a_chat_file_as_read(tmp_path, private_cache):
    chat = [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"Say {i}."},
                          {"role": "assistant", "content": f"{i}"}]} for i in range(20)]
    result = CliRunner().invoke(app, ["data", "tasks", str(_jsonl(tmp_path / "chat.jsonl", chat)),
                                      "--n", "1", "--split", "validation"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "chat format, 20 records; columns messages" in lines[0]
    i = lines.index("----- messages")
    assert lines[i + 1] == "system: Be brief." and lines[i + 2].startswith("user: Say ")


def test_data_tasks_wrong_schema_is_one_line_naming_columns_and_formats(tmp_path, private_cache):
    data = _jsonl(tmp_path / "qa.jsonl", QA)
    result = CliRunner().invoke(app, ["data", "tasks", str(data)])  # no --columns
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "columns ['answer', 'question', 'reply']" in line
    assert "accepted formats: messages (chat), prompt+completion, instruction+output" in line
    assert "--columns" in line
    # a mapping from a column the file lacks names the columns it has
    result = CliRunner().invoke(app, ["data", "tasks", str(data), "--columns", "query=prompt"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "no column(s) ['query']" in line and "columns found: ['answer', 'question', 'reply']" in line
