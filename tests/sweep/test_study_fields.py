"""A study's fields are the training configs' fields (issue 25 §2): the same checks, defaults and
descriptions, the same rules between fields (so the command line refuses what a study refuses),
the two divergence checks under two names, each model preset's size class, and the memorisation
test's settings as a typed study field."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from forgetless.sweep.execute import train_config
from forgetless.sweep.study import StudyError, expand, load_study
from forgetless.sweep.study_fields import (
    BaseSpec,
    DataSpec,
    GridSpec,
    MethodSpec,
    PretrainSpec,
    TaskSpec,
)
from forgetless.train.config import ByModel, FinetuneConfig, PretrainConfig, TrainConfig

STUDY = {"name": "s", "data": {"corpus": "stdlib", "vocab_size": 512},
         "pretrain": [{"name": "a", "model": "nano", "optimizer": "adamw", "tokens": "20k"}],
         "finetune": {"tasks": ["arith"], "steps": 6, "eval_every": 3,
                      "methods": [{"kind": "full", "optimizer": "adamw", "lrs": [1e-4]}]}}


def _study(**grid) -> dict:
    study = copy.deepcopy(STUDY)
    study["finetune"].update(grid)
    return study


# (study class, its field, the config class, the config's field, the study's default if it has its own:
# "required" or a value; absent: the config's default)
DERIVED = [
    (DataSpec, "corpus", PretrainConfig, "corpus"), (DataSpec, "tokenizer", PretrainConfig, "tokenizer"),
    (DataSpec, "vocab_size", PretrainConfig, "vocab_size"),
    (PretrainSpec, "model", PretrainConfig, "model", "required"),
    (PretrainSpec, "optimizer", PretrainConfig, "optimizer", "required"),
    (PretrainSpec, "tokens", PretrainConfig, "tokens", "required"),
    (PretrainSpec, "decay", PretrainConfig, "decay"),
    (PretrainSpec, "lr", PretrainConfig, "lr", PretrainConfig.DEFAULTS["lr"]),  # what resolved() fills
    (BaseSpec, "optimizer", TrainConfig, "optimizer", "required"),
    (TaskSpec, "name", FinetuneConfig, "task", "required"),
    (MethodSpec, "kind", FinetuneConfig, "method", "required"),
    (MethodSpec, "optimizer", FinetuneConfig, "optimizer", "required"),
    (MethodSpec, "lora_rank", FinetuneConfig, "lora_rank", None),  # required for lora by the study
    (MethodSpec, "lora_alpha", FinetuneConfig, "lora_alpha"),
    (GridSpec, "steps", FinetuneConfig, "steps", "required"),
    (GridSpec, "eval_every", FinetuneConfig, "eval_every", "required"),
]


@pytest.mark.parametrize("row", DERIVED, ids=lambda r: f"{r[0].__name__}.{r[1]}")
def test_a_study_field_is_the_config_field(row):
    spec, name, config, field, *own = row
    ours, theirs = spec.model_fields[name], config.model_fields[field]
    assert ours.metadata == theirs.metadata  # ge, gt, le, lt, allow_inf_nan: the config's checks
    assert ours.description == theirs.description
    if not own:
        assert ours.default == theirs.default
    elif own[0] == "required":
        assert ours.is_required()
    else:
        assert ours.default == own[0]


@pytest.mark.parametrize(("where", "value", "message"), [
    ("pretrain.decay", 1.5, "Input should be less than or equal to 1"),
    ("pretrain.lr", float("inf"), "Input should be a finite number"),
    ("pretrain.seeds", [-1], "Input should be greater than or equal to 0"),
    ("pretrain.model", "huge", "model 'huge' is not a preset; allowed: nano"),
    ("pretrain.optimizer", "adamx", "optimizer 'adamx' is unknown; allowed: adamw"),
    ("finetune.steps", "10.5", "steps must be a whole number"),
])
def test_a_study_refuses_a_value_as_the_config_refuses_it(where, value, message):
    part, name = where.split(".")
    study = copy.deepcopy(STUDY)
    (study["pretrain"][0] if part == "pretrain" else study["finetune"])[name] = value
    with pytest.raises(StudyError, match=message):
        load_study(study)
    config = {"model": "nano", "out_dir": "x"} if part == "pretrain" else {"base": "b", "task": "arith", "out_dir": "x"}
    name = {"seeds": "seed"}.get(name, name)
    with pytest.raises(ValidationError, match=message):
        (PretrainConfig if part == "pretrain" else FinetuneConfig).model_validate(
            {**config, name: value[0] if isinstance(value, list) else value})


def test_counts_parse_in_a_study_as_on_the_command_line():
    grid = load_study(_study(steps="2k", eval_every=500)).finetune[0]
    assert (grid.steps, grid.eval_every) == (2000, 500)


# Rules between fields: the study, the config from Python and the command line give one message.
RULES = [
    ({"steps": 6, "eval_every": 18}, ["--steps", "6", "--eval-every", "18"],
     "eval_every", "18 is larger than steps (6); allowed: 1 to 6"),
    ({"methods": [{"kind": "full", "optimizer": "adamw", "lora_rank": 8, "lrs": [1e-4]}]},
     ["--method", "full", "--lora-rank", "8"], "lora_rank", "8 is set but method is 'full'; allowed: method 'lora'"),
]


@pytest.mark.parametrize(("grid", "args", "field", "message"), RULES, ids=["eval_every", "lora_rank"])
def test_the_command_line_refuses_what_a_study_refuses(grid, args, field, message, tmp_path):
    from forgetless.cli import app

    with pytest.raises(StudyError, match=f"{field}: {re.escape(message)}"):
        load_study(_study(**grid))
    values = {a.removeprefix("--").replace("-", "_"): v for a, v in zip(args[::2], args[1::2], strict=True)}
    with pytest.raises(ValidationError, match=f"{field}: {re.escape(message)}"):
        FinetuneConfig(out_dir=tmp_path, base="b", task="arith", **values)
    result = CliRunner().invoke(app, ["finetune", "b", "--task", "arith", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    flag = f"--{field.replace('_', '-')}"
    assert f"{field} ({flag}): {message}" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()  # refused before any work


def test_what_the_rules_allow_still_loads(tmp_path):
    """A LoRA rank on a lora finetune, and a full run's resolved config.yaml: it records the LoRA
    defaults (lora_rank 16), and resuming it reads it back."""
    FinetuneConfig(out_dir=tmp_path, base="b", task="arith", method="lora", lora_rank=8, steps=6, eval_every=6)
    full = FinetuneConfig(out_dir=tmp_path, base="b", task="arith").resolved({"model": "nano"})
    assert full.lora_rank == FinetuneConfig.model_fields["lora_rank"].default
    full.to_yaml(tmp_path / "config.yaml")
    assert FinetuneConfig.from_yaml(tmp_path / "config.yaml") == full


def test_vocab_size_defaults_to_the_pretraining_configs_per_model():
    """Without data.vocab_size each base's data takes what `forgetless pretrain --model M` would
    resolve, and its finetunes carry the same."""
    study = copy.deepcopy(STUDY)
    del study["data"]["vocab_size"]
    study["pretrain"].append({"name": "big", "model": "gpt2-small", "optimizer": "adamw", "tokens": "20k"})
    cells = expand(load_study(study))
    for cell in cells:
        model = cell.config.get("model") or next(c.config["model"] for c in cells if c.cell_id == cell.base_id)
        expected = PretrainConfig(out_dir="x", model=model).resolved().vocab_size
        assert cell.config["data"]["vocab_size"] == expected, cell.label
        if cell.kind == "pretrain":
            assert train_config(cell, Path("c"), None).vocab_size == expected
    assert {c.config["data"]["vocab_size"] for c in cells} == {4096, 8192}


def test_the_two_divergence_checks_have_two_names():
    study = copy.deepcopy(STUDY)
    study["eval_diverge_factor"] = 3.0
    study["finetune"]["settings"] = {"diverge_factor": 6.0}
    cells = expand(load_study(study))
    ft = next(c for c in cells if c.kind == "finetune")
    pre = next(c for c in cells if c.kind == "pretrain")
    assert ft.config["eval_diverge_factor"] == 3.0  # the sweep's eval-loss check (sweep/cell.py)
    assert train_config(ft, Path("c"), ".").diverge_factor == 6.0  # the training loop's, a setting
    assert train_config(pre, Path("c"), None).diverge_factor == TrainConfig.model_fields["diverge_factor"].default
    with pytest.warns(UserWarning, match="'diverge_factor' is now 'eval_diverge_factor'"):
        old = load_study({**STUDY, "diverge_factor": 3.0})
    assert old.eval_diverge_factor == 3.0


def test_every_model_preset_has_a_size_class_and_its_own_defaults():
    """medium took the paper's GPT-2 settings (8B tokens); each preset now names its class, and
    every model-dependent default gives each preset that is not of the paper's class a value."""
    from forgetless.models.names import SIZE_CLASSES
    from forgetless.models.presets import PRESETS

    assert set(SIZE_CLASSES) == set(PRESETS)
    for cls in (PretrainConfig, FinetuneConfig):
        for name, default in cls.DEFAULTS.items():
            if isinstance(default, ByModel):
                missing = [m for m, c in SIZE_CLASSES.items() if c != "paper" and m not in default.values]
                assert missing == [], f"{cls.__name__}.{name}"
    # the gpu class's defaults are the gpu-quick preset's (its bases are medium)
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "src/forgetless/sweep/presets/gpu-quick.yaml").read_text())
    pre, grid = raw["pretrain"][0], raw["finetune"][0]
    assert pre["model"] == "medium"
    cfg = PretrainConfig(out_dir="x", model="medium").resolved()
    assert (cfg.seq_len, cfg.batch_size) == (pre["settings"]["seq_len"], pre["settings"]["batch_size"])
    assert cfg.tokens == cfg.steps * cfg.seq_len * cfg.batch_size and abs(cfg.tokens - 12_000_000) < cfg.seq_len * cfg.batch_size
    ft = FinetuneConfig(out_dir="x", base="b", task="arith").resolved({"model": "medium"})
    assert (ft.steps, ft.eval_every, ft.seq_len, ft.batch_size) == (grid["steps"], grid["eval_every"],
                                                                    grid["settings"]["seq_len"], grid["settings"]["batch_size"])


def test_the_memorisation_test_is_a_typed_study_field():
    study = {**STUDY, "reproduce": {"probe_tokens": 4096,
                                    "memorization": {"steps": 10, "eval_every": 5, "seeds": [1, 2]}}}
    extra = load_study(study).reproduce
    configs = extra.memorization.configs()
    assert [c.seed for c in configs] == [1, 2] and all(c.steps == 10 for c in configs)
    assert "seeds" not in configs[0].model_dump()  # one seed per config: the cache key of reproduce
    for bad, message in (({"stepz": 10}, r"reproduce.memorization.stepz: unknown field; did you mean steps\?"),
                         ({"preset": "huge"}, "reproduce.memorization.preset: model 'huge' is not a preset"),
                         ({"optimizers": ["adamx"]}, "optimizer 'adamx' is unknown"),
                         ({"lrs": [0]}, r"reproduce.memorization.lrs\[0\]: Input should be greater than 0")):
        with pytest.raises(StudyError, match=message):
            load_study({**STUDY, "reproduce": {"memorization": bad}})
