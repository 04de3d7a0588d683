"""Conventions people bring from other tools (issue 23 §6), each fed the input that failed:
HF Trainer option names, fractional steps, ShareGPT files, SIGTERM, the exported dropout, the
held-out count on the console, TensorBoard tags shared with ForgettingCallback, replay on an
outside model, the chat-template preview of `data tasks`, and lm_eval tasks from the command line."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from forgetless.cli import app
from forgetless.train import FinetuneConfig

runner = CliRunner()
FT = dict(steps=2, eval_every=2, batch_size=8, seq_len=160, eval_tokens=512, progress=False, threads=1,
          optimizer="adamw", lr=1e-3)


# ------------------------------------------------------------------------- options and configs
def test_fractional_steps_are_refused_not_rounded(tmp_path) -> None:
    result = runner.invoke(app, ["finetune", "b", "--task", "arith", "--steps", "10.5", "--optimizer", "adamw",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "steps must be a whole number, got '10.5'" in result.output, result.output
    with pytest.raises(ValidationError, match="whole number"):  # a YAML float too
        FinetuneConfig(out_dir=tmp_path, base="b", task="arith", steps=10.5)
    # counts written with a suffix still read as people write them
    assert FinetuneConfig(out_dir=tmp_path, base="b", task="arith", steps="1.5k").steps == 1500
    assert FinetuneConfig(out_dir=tmp_path, base="b", task="arith", steps=12.0).steps == 12


@pytest.mark.parametrize(("typed", "meant"), [
    ("--learning_rate", "--lr"), ("--batch_size", "--batch-size"), ("--max_steps", "--steps"),
    ("--per_device_train_batch_size", "--batch-size"), ("--output_dir", "--out"),
    ("--gradient_accumulation_steps", "--grad-accum"),
])
def test_trainer_names_suggest_our_option(tmp_path, typed, meant) -> None:
    result = runner.invoke(app, ["finetune", "b", "--task", "arith", typed, "3", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"No such option: {typed}; did you mean {meant}?" in result.output, result.output
    assert "Possible options" not in result.output  # one suggestion, not click's list beside it


def test_unknown_yaml_keys_are_listed_once_with_the_nearest_field(tmp_path) -> None:
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({"task": "arith", "learning_rat": 1e-4, "batch_sise": 4}))
    result = runner.invoke(app, ["finetune", "b", "--config", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    out = result.output
    assert "learning_rat: unknown field; did you mean lr?" in out, out
    assert "batch_sise: unknown field; did you mean batch_size?" in out, out
    assert out.count("learning_rat") == 1 and out.count("batch_sise") == 1
    assert out.count("allowed: ") == 1  # the field list once, not once per bad key


# ------------------------------------------------------------------------- data
def _sharegpt(path, n: int) -> list[dict]:
    rows = [{"conversations": [{"from": "human", "value": f"what is {i} plus {i}?"},
                               {"from": "gpt", "value": f"{2 * i}"}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_sharegpt_conversations_key(tmp_path) -> None:
    from forgetless.data import load_task

    rows = _sharegpt(tmp_path / "chat.jsonl", 20)
    records = load_task(str(tmp_path / "chat.jsonl"), "train") + load_task(str(tmp_path / "chat.jsonl"), "validation")
    want = {(("user", c[0]["value"]), ("assistant", c[1]["value"])) for c in (r["conversations"] for r in rows)}
    assert {r.messages for r in records} == want and len(records) == 20
    assert {r.response for r in records} == {str(2 * i) for i in range(20)}


TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_data_tasks_previews_with_the_chat_template(base_run, tmp_path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_run.final_checkpoint)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(tmp_path / "chat-model")
    _sharegpt(tmp_path / "chat.jsonl", 20)
    result = runner.invoke(app, ["data", "tasks", str(tmp_path / "chat.jsonl"), "--n", "1", "--json",
                                 "--model", str(tmp_path / "chat-model")])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout.strip().splitlines()[-1])
    user, reply = rec["messages"][0][1], rec["messages"][1][1]
    # the template rendered by hand; the loss falls on what the assistant turn adds
    assert rec["rendered"] == f"<|user|>\n{user}<|end|>\n<|assistant|>\n{reply}<|end|>\n"
    assert rec["learned"] == f"{reply}<|end|>\n"
    # without a template: the plain prompt + response + EOS finetune uses then
    result = runner.invoke(app, ["data", "tasks", str(tmp_path / "chat.jsonl"), "--n", "1", "--json",
                                 "--model", str(base_run.out_dir)])
    rec = json.loads(result.stdout.strip().splitlines()[-1])
    assert rec["rendered"] == rec["prompt"] + rec["response"] + tok.eos_token


# ------------------------------------------------------------------------- finetune runs
@pytest.fixture(scope="module")
def outside_run(base_run, corpus_dir, tmp_path_factory):
    """A finetune of the base's *checkpoint folder* (an outside model: no forgetless run config)
    on a ShareGPT file of 40 records, tracked in TensorBoard; (result, console text, task file)."""
    import contextlib
    import io

    from forgetless.train import finetune

    root = tmp_path_factory.mktemp("outside")
    _sharegpt(root / "chat.jsonl", 40)
    cfg = FinetuneConfig(base=str(base_run.final_checkpoint), task=str(root / "chat.jsonl"), **FT,
                         forget_corpus=str(corpus_dir), forget_balance=True,  # as for any outside model
                         trackers=["tensorboard"], out_dir=root / "ft")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = finetune(cfg)
    return result, err.getvalue(), root / "chat.jsonl"


def test_console_says_how_many_records_are_held_out(outside_run) -> None:
    _, console, _ = outside_run
    # 40 records: 5% is 2, raised to the minimum of 8 held out (data/user_data.py's rule)
    assert "32 training records; 8 held out measure learning" in console, console


def test_exported_config_keeps_the_base_dropout(outside_run, base_run) -> None:
    result, _, _ = outside_run
    base = json.loads((base_run.final_checkpoint / "config.json").read_text())
    exported = json.loads((result.final_checkpoint / "config.json").read_text())
    assert base["attention_dropout"] == 0.0
    assert exported["attention_dropout"] == base["attention_dropout"]
    assert yaml.safe_load((result.out_dir / "config.yaml").read_text())["dropout"] == 0.1  # trained with it


def test_tensorboard_tags_are_the_callbacks(outside_run) -> None:
    """The command line's tags are those a Trainer's TensorBoard gives ForgettingCallback's records."""
    from transformers.integrations.integration_utils import rewrite_logs

    from forgetless.integrations.callback import PREFIX
    from trackers_readback import tensorboard  # tests/ (on the path, as for test_trackers.py)

    result, _, _ = outside_run
    tags = set(tensorboard(result.out_dir / "tensorboard"))
    sources = result.points[0]["forgetting_by_source"]
    callback = rewrite_logs({f"{PREFIX}_loss": 1.0, f"{PREFIX}_delta": 0.0,
                             **{f"{PREFIX}_loss_{s}": 1.0 for s in sources}})
    assert set(callback) <= tags, sorted(tags)
    events = tensorboard(result.out_dir / "tensorboard")
    assert events["eval/forgetting_loss"][0] == pytest.approx(result.points[0]["forgetting"], rel=1e-6)


def test_replay_on_an_outside_model_takes_a_replay_corpus(outside_run, base_run, corpus_dir, tmp_path) -> None:
    from forgetless.train import finetune

    first, _, task = outside_run
    cfg = FinetuneConfig(base=str(base_run.final_checkpoint), task=str(task), **FT, replay=0.25,
                         forget_corpus=str(corpus_dir), forget_balance=True, out_dir=tmp_path / "refused",
                         console=False)
    with pytest.raises(ValueError, match="--replay-corpus PATH"):
        finetune(cfg)
    with pytest.raises(ValueError, match="is the reference text itself"):  # that would replay measured text
        finetune(cfg.model_copy(update={"replay_corpus": str(corpus_dir)}))
    other = tmp_path / "other-text"  # text the forgetting sample never reads
    other.mkdir()
    for k in range(40):
        (other / f"notes{k}.txt").write_text("".join(f"note {k}.{i}: the tree over the house is red.\n" for i in range(20)))
    result = runner.invoke(app, ["finetune", str(base_run.final_checkpoint), "--task", str(task),
                                 "--forget-corpus", str(corpus_dir), "--forget-balance",
                                 "--replay", "0.25", "--replay-corpus", str(other), "--steps", "2",
                                 "--eval-every", "2", "--batch-size", "8", "--seq-len", "160", "--eval-tokens", "512",
                                 "--optimizer", "adamw", "--lr", "1e-3", "--threads", "1", "--no-console",
                                 "--out", str(tmp_path / "replayed")])
    assert result.exit_code == 0, result.output
    points = [json.loads(line) for line in (tmp_path / "replayed" / "metrics.jsonl").read_text().splitlines()]
    evals = [p for p in points if p.get("kind") == "eval"]
    # the forgetting sample is unchanged: the base's loss on it is the run without replay's
    assert evals[0]["forgetting"] == first.points[0]["forgetting"]
    assert evals[0]["forgetting_by_source"] == first.points[0]["forgetting_by_source"]
    assert evals[-1]["replay_sequences"] == 4  # floor(2 steps x 0.25 x 8 sequences)


def test_sigterm_leaves_status_stopped(base_run, tmp_path) -> None:
    from forgetless.train import finetune
    from forgetless.train.loop import Stopped

    def term_at_2(point):
        if point["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    cfg = FinetuneConfig(base=str(base_run.out_dir), task="arith", **{**FT, "steps": 4}, train_n=32, eval_n=8,
                         out_dir=tmp_path / "ft", console=False)
    with pytest.raises(Stopped):
        finetune(cfg, on_eval=term_at_2)
    status = json.loads((tmp_path / "ft" / "status.json").read_text())
    assert status["status"] == "stopped" and status["step"] == 2
    assert status["final_checkpoint"].endswith("step-000002")  # the step it stopped at, kept
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
    # a run written before replay_corpus and harness* existed resumes too (their defaults then)
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    old = {k: v for k, v in saved.items() if k not in ("replay_corpus", "harness", "harness_limit", "harness_tasks_dir")}
    (tmp_path / "ft" / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    result = finetune(cfg.model_copy(update={"resume": True}))  # and the run continues from there
    assert result.status == "done" and [p["step"] for p in result.points] == [0, 2, 4]


# ------------------------------------------------------------------------- lm_eval from the CLI
MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def test_harness_without_lm_eval_says_how_to_install(monkeypatch, tmp_path) -> None:
    from forgetless.integrations import harness

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    harness._task_manager.cache_clear()
    result = runner.invoke(app, ["finetune", "b", "--task", "arith", "--harness", "hellaswag", "--optimizer",
                                 "adamw", "--out", str(tmp_path / "o")])
    harness._task_manager.cache_clear()
    assert result.exit_code == 2 and 'pip install "forgetless[harness]"' in result.output, result.output


def test_harness_tasks_from_the_command_line(base_run, tmp_path, monkeypatch) -> None:
    pytest.importorskip("lm_eval")
    import datasets.config
    import huggingface_hub.constants
    from transformers import AutoTokenizer

    from forgetless.integrations.harness import harness_scores
    from forgetless.models import load_model

    docs = [{"question": f"what is {a} plus {a}?", "choices": [str(2 * a), "cat", "the red house"],
             "answer": a % 3} for a in range(6)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(MC_YAML.format(data=tmp_path / "mc.jsonl"))
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    result = runner.invoke(app, ["finetune", str(base_run.out_dir), "--task", "arith", "--harness", "tiny_mc",
                                 "--harness-tasks-dir", str(tmp_path / "tasks"), "--steps", "2", "--eval-every", "2",
                                 "--batch-size", "8", "--seq-len", "96", "--eval-tokens", "512", "--train-n", "32",
                                 "--eval-n", "8", "--threads", "1", "--no-console", "--out", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    evals = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    evals = [p for p in evals if p.get("kind") == "eval"]
    assert [p["step"] for p in evals] == [0, 2]
    assert all(p["forgetting_accuracy"] * 6 == round(p["forgetting_accuracy"] * 6) for p in evals)  # k of 6 docs
    # step 0 is the base: the same score as the harness gives the base checkpoint from Python
    model, _ = load_model(base_run.final_checkpoint)
    tok = AutoTokenizer.from_pretrained(base_run.final_checkpoint)
    assert evals[0]["harness"] == harness_scores(model, tok, ["tiny_mc"], include_path=str(tmp_path / "tasks"))
