"""No code from a checkpoint ever runs (issue 24 §1).

The checkpoint here is a tiny Llama whose config.json and tokenizer_config.json carry an `auto_map`
naming a Python file in the folder; importing that file writes a marker file. A "y" waits on stdin,
the answer transformers' prompt would take. Every way in (finetune, recommend --infer, a sweep with
--workers 0, the library loaders) must refuse it in one line, and the marker must never appear.
A control run with trust_remote_code=True shows that the file does write the marker when imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from typer.testing import CliRunner

from forgetless.cli import app

runner = CliRunner()

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("checkpoint code ran")
from transformers import LlamaConfig, LlamaForCausalLM


class EvilConfig(LlamaConfig):
    model_type = "llama"


class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint folder, marker path)."""
    root = tmp_path_factory.mktemp("trust")
    ckpt, marker = root / "evil-ckpt", root / "MARKER"
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2)
    transformers.LlamaForCausalLM(cfg).save_pretrained(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.EvilTok", None]}}))
    (ckpt / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return ckpt, marker


def _refused(res, marker: Path) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert res.stderr.count("\n") == 1 and "auto_map" in res.stderr and "never imports code" in res.stderr, res.stderr
    assert "Traceback" not in res.output and "[y/N]" not in res.output
    assert not marker.exists()


def test_finetune_refuses_a_checkpoint_with_code(evil, tmp_path) -> None:
    ckpt, marker = evil
    res = runner.invoke(app, ["finetune", str(ckpt), "--task", "arith", "--steps", "2", "--out",
                              str(tmp_path / "run")], input="y\n")
    _refused(res, marker)


def test_recommend_infer_refuses_a_checkpoint_with_code(evil) -> None:
    ckpt, marker = evil
    _refused(runner.invoke(app, ["recommend", str(ckpt), "--infer"], input="y\n"), marker)


def test_a_sweep_refuses_a_base_with_code(evil, tmp_path) -> None:
    ckpt, marker = evil
    study = {"name": "s", "out_dir": str(tmp_path / "out"),
             "bases": [{"name": "b", "checkpoint": str(ckpt), "optimizer": "adamw"}],
             "finetune": [{"tasks": ["arith"], "steps": 2, "eval_every": 2,
                           "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4]}]}]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    _refused(runner.invoke(app, ["sweep", str(path), "--workers", "0"], input="y\n"), marker)


def test_the_loaders_below_never_import_it(evil) -> None:
    """The second line of defence: the loaders themselves pass trust_remote_code=False, so even
    past the refusal transformers builds its own Llama class and never imports evil.py."""
    from forgetless.data.tokenizer import load_tokenizer
    from forgetless.errors import UserError
    from forgetless.train import distributed

    ckpt, marker = evil
    model = distributed.empty_model(ckpt)  # AutoConfig + from_config, as a sharded finetune does
    assert type(model).__name__ == "LlamaForCausalLM"
    with pytest.raises(UserError, match="auto_map"):
        load_tokenizer(ckpt)
    assert not marker.exists()


def test_control_the_marker_is_written_when_the_code_is_trusted(evil, tmp_path) -> None:
    """The test would see the code run: with trust_remote_code=True it does (in a subprocess,
    with its own module cache, so nothing of it stays in this process or the user's cache)."""
    ckpt, _ = evil
    marker = tmp_path / "MARKER"
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for f in ckpt.iterdir():
        text = f.read_bytes()
        (copy / f.name).write_bytes(text.replace(str(evil[1]).encode(), str(marker).encode()))
    code = (f"import transformers; transformers.AutoConfig.from_pretrained({str(copy)!r}, "
            "trust_remote_code=True)")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert marker.read_text() == "checkpoint code ran"


# ---------------------------------------------------------------- §2: untrusted output never crashes

BRACKETS = "def f(*a):\n    import os\n    os.write(1, b'\\n' + b'[' * 99999 + b'\\n')\n    os._exit(0)\n"


def test_a_program_printing_99999_brackets_is_a_wrong_answer() -> None:
    """The input that aborted a finetune: `'[' * 99999` as the last line the code prints made
    the caller's json.loads raise RecursionError. Now it is a failed check, with the reason."""
    from forgetless.data import check_answer
    from forgetless.data.sandbox import run_tests
    from forgetless.data.sft import SFTRecord

    report = run_tests(BRACKETS, "f", [[[1], 2]], timeout=10.0)
    assert (report.passed, report.total) == (0, 1) and "without results" in report.error
    record = SFTRecord(prompt="p", response="r", answer=json.dumps({"entry": "f", "tests": [[[1], 2]]}))
    assert check_answer("code", record, "```python\n" + BRACKETS + "```") is False
    # the same function printing its brackets first and then returning normally passes
    fine = BRACKETS.replace("os._exit(0)", "return a[0] + 1")
    assert check_answer("code", record, "```python\n" + fine + "```") is True


def test_a_deeply_nested_return_value_is_a_wrong_answer() -> None:
    from forgetless.data.sandbox import run_tests

    code = "def f():\n    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n"
    report = run_tests(code, "f", [[[], []]], timeout=10.0)
    assert report.passed == 0 and report.error is None and report.errors == ("RecursionError",)


def test_bounded_json_against_the_standard_parser() -> None:
    from forgetless.untrusted import UnsafeInput, json_depth, load_json

    doc = {"a": [1, {"b": "[[[{{{"}], "c": "\\\"]]"}
    text = json.dumps(doc)
    assert load_json(text, max_bytes=1000) == json.loads(text) == doc
    assert json_depth(text) == 3  # the brackets inside strings do not count
    assert json_depth("[" * 64 + "]" * 64) == 64 and load_json("[" * 64 + "]" * 64, max_bytes=200)
    for bad, what in (("[" * 99999, "nested"), ("[" * 65 + "]" * 65, "nested"), ("1" * 2000, "bytes")):
        with pytest.raises(UnsafeInput, match=what):
            load_json(bad, max_bytes=100_000 if what == "nested" else 1000)


def test_the_code_inherits_no_descriptor_but_its_pipes() -> None:
    """Issue 24 §6: descriptors the sandbox's supervisor held were open in the code's process.
    Now only 0, 1, 2 remain, and the interpreter's import directories where the code's uid cannot
    reach them by path (here: a Python under /root run as nobody)."""
    import sysconfig

    from forgetless.data.sandbox import run_tests

    code = ("import os\n"
            "def f(prefix):\n"
            "    bad = []\n"
            "    for n in sorted(os.listdir('/proc/self/fd'), key=int)[:-1]:  # the last: this listing\n"
            "        if int(n) > 2 and not os.path.realpath('/proc/self/fd/' + n).startswith(prefix):\n"
            "            bad.append(n + ' ' + os.path.realpath('/proc/self/fd/' + n))\n"
            "    return bad\n")
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    report = run_tests(code, "f", [[[stdlib], []]], timeout=10.0)
    assert report.ok, report


def test_compare_markdown_escapes_labels() -> None:
    """compare.md wrote labels raw, so `<script>` reached a Markdown renderer; `|` split cells."""
    from forgetless.report.compare import _md

    assert _md("<script>alert(1)</script>|x") == "&lt;script&gt;alert(1)&lt;/script&gt;\\|x"


# ---------------------------------------------------------------- §4: bounded YAML

def test_bounded_yaml_reads_what_safe_load_reads_and_refuses_bombs() -> None:
    from forgetless.untrusted import YAMLLimit, load_yaml

    text = "base: &b {lr: 0.001, steps: 4}\nrun:\n  <<: *b\n  steps: 8\nlist: [*b, *b]\n"
    assert load_yaml(text) == yaml.safe_load(text)  # a merge key overridden beside it is allowed
    assert load_yaml("") is None
    laughs = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True))
    with pytest.raises(YAMLLimit, match="alias bomb"):
        load_yaml("a: &a [x, x, x, x, x, x, x, x, x]\n" + laughs)  # 9**7 = 4.8M strings once expanded
    with pytest.raises(YAMLLimit, match="duplicate key 'lr'"):
        load_yaml("lr: 1\nsteps: 2\nlr: 3\n")
    with pytest.raises(YAMLLimit, match="contains it"):
        load_yaml("a: &a [1, *a]\n")
    with pytest.raises(YAMLLimit, match="deep"):
        load_yaml("[" * 100 + "]" * 100)
    with pytest.raises(YAMLLimit, match="over the limit"):
        load_yaml("x: 1\n" * 10, max_bytes=20)


def test_report_markdown_escapes_labels(tmp_path) -> None:
    """report.md wrote labels raw, so `<script>` passed through (the HTML already escaped them)."""
    from forgetless.report.render import Section, Table, write_report

    label = "<script>alert(1)</script>"
    sections = [Section(f"base {label}", paragraphs=[f"method {label} & co"],
                        tables=[Table(["method", "status"], [[label, "holds"]], caption=label)])]
    md, _ = write_report("Title", sections, tmp_path)
    text = md.read_text()
    assert "<script>" not in text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4 and "& co" not in text
