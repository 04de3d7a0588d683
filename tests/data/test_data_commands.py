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
