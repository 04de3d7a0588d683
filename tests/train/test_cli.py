"""`forgetless pretrain` / `forgetless finetune` through typer's CliRunner: runs, YAML configs, clear errors."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from forgetless.cli import app

runner = CliRunner()


def test_help_explains_options() -> None:
    for command, option in (("pretrain", "--optimizer"), ("finetune", "--rank")):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and option in result.output


def test_pretrain_then_finetune_from_the_command_line(corpus_dir, tmp_path) -> None:
    base = tmp_path / "base"
    result = runner.invoke(app, ["pretrain", "--model", "nano", "--optimizer", "muon", "--corpus", str(corpus_dir),
                                 "--vocab-size", "512", "--tokens", "3k", "--batch-size", "8", "--seq-len", "64",
                                 "--eval-tokens", "512", "--out", str(base), "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((base / "config.yaml").read_text())
    assert saved["steps"] == 6 and saved["tokens"] == 3072 and saved["optimizer"] == "muon"  # 3k / (8 x 64), rounded
    # A YAML config, with an option on the command line overriding it.
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump({"task": "arith", "method": "lora", "lora_rank": 2, "steps": 4,
                                                      "eval_every": 2, "batch_size": 4, "seq_len": 96, "eval_n": 8,
                                                      "train_n": 16, "eval_tokens": 512, "lr": 5e-3}))
    result = runner.invoke(app, ["finetune", str(base), "--config", str(tmp_path / "ft.yaml"), "--lr", "1e-3",
                                 "--out", str(tmp_path / "ft"), "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert (saved["lr"], saved["lora_alpha"], saved["optimizer"]) == (1e-3, 4.0, "muon")
    points = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points if p["kind"] == "eval"] == [0, 2, 4]
    # The same out dir again without --resume is refused, with the way out in the message.
    result = runner.invoke(app, ["finetune", str(base), "--config", str(tmp_path / "ft.yaml"), "--out", str(tmp_path / "ft")])
    assert result.exit_code == 2 and "--resume" in result.output


def test_user_errors_exit_2_without_traceback(tmp_path) -> None:
    cases = [
        (["pretrain", "--optimizer", "adam", "--out", str(tmp_path / "x")], "allowed: adamw"),
        (["pretrain", "--model", "huge", "--out", str(tmp_path / "x")], "allowed: nano, micro, small, medium, gpt2-small"),
        (["pretrain", "--tokens", "lots", "--out", str(tmp_path / "x")], "tokens must be a count like 5M"),
        (["pretrain", "--model", "nano"], "out_dir (--out): Field required"),
        (["pretrain", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")], "no such file"),
        (["finetune", str(tmp_path / "nothing"), "--task", "arith", "--out", str(tmp_path / "y")], "holds no model"),
        (["finetune", "b", "--task", "arith", "--method", "qlora", "--out", str(tmp_path / "y")], "'full' or 'lora'"),
        (["finetune", "b", "--task", "arith", "--track", "neptune", "--out", str(tmp_path / "y")], "allowed: tensorboard"),
    ]
    (tmp_path / "nothing").mkdir()
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
