"""Each training setting is declared once, in PretrainConfig / FinetuneConfig: every field is an
option of its command (and reaches the config with the value typed), survives a YAML round trip,
and is accepted in a study's `settings`; --help's defaults are the ones resolved() applies.

Values are found per field from its type alone (the first candidate the field accepts that differs
from its default), so a new field is covered without touching this file.
"""

from __future__ import annotations

import typing
import warnings
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from forgetless.sweep.execute import OWNED, check_study
from forgetless.sweep.study import DeprecatedName, expand, load_study
from forgetless.train.commands import config_command
from forgetless.train.config import ByModel, FinetuneConfig, PretrainConfig, Same
from forgetless.train.options import flags

REQUIRED = {PretrainConfig: {"out_dir": "run"}, FinetuneConfig: {"out_dir": "run", "base": "b", "task": "arith"}}
CANDIDATES = {  # tried in order; values a field of that shape might accept
    str: ["muon", "nano", "cpu", "arith", "x.txt"],
    int: [3, 70, 2000],
    float: [0.5, 0.05, 2.5, 20.0],
    Path: [Path("elsewhere")],
    list: [["tensorboard"], ["q_proj"], [0.5], ["a"]],
    dict: [{"ns_steps": 6}, {"question": "prompt"}],
}


def _args_of(annotation) -> list:
    if typing.get_origin(annotation) is typing.Literal:
        return [annotation]
    return [a for a in typing.get_args(annotation) if a is not type(None)] if typing.get_args(annotation) \
        and typing.get_origin(annotation) not in (list, dict) else [annotation]


def _kinds(annotation) -> list:
    return [typing.get_origin(a) or a for a in _args_of(annotation)]


def value_for(cls, name: str):
    """A value `name` accepts that is not its default (validated by the class itself)."""
    field = cls.model_fields[name]
    for kind, arg in zip(_kinds(field.annotation), _args_of(field.annotation), strict=True):
        if kind is typing.Literal:
            pool = list(typing.get_args(arg))
        elif kind is bool:
            pool = [not field.default] if field.default is not None else [True]
        else:
            pool = CANDIDATES.get(kind, [])
        for value in pool:
            if value == field.default:
                continue
            extra = {"method": "lora"} if name.startswith("lora_") else {}
            try:
                cfg = cls.model_validate({**REQUIRED[cls], **extra, name: value})
            except ValidationError:
                continue
            if getattr(cfg, name) != field.default:
                return value, extra
    raise AssertionError(f"{cls.__name__}.{name}: no candidate value found; add one to CANDIDATES")


def _args(cls, name: str, value) -> list[str]:
    field = cls.model_fields[name]
    flag = flags(name, field)[0]
    if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("cli") == "argument":
        return [str(value)]
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag[2:]}"]
    if isinstance(value, list):
        return [a for v in value for a in (flag, str(v))]
    if isinstance(value, dict):
        return [a for k, v in value.items() for a in (flag, f"{k}={v}")]
    return [flag, str(value)]


def _app(cls, seen: list):
    app = typer.Typer()
    app.command("run")(config_command(cls, "test", seen.append, "Own"))
    app.command("other")(lambda: None)  # two commands: typer keeps the subcommand name
    return app


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig], ids=lambda c: c.__name__)
def test_every_field_is_an_option_with_its_help(cls) -> None:
    app = _app(cls, [])
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0, result.output
    for name, field in cls.model_fields.items():
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("cli") == "argument":
            assert name.upper() in result.output
            continue
        assert flags(name, field)[0] in result.output, f"{name} has no option in --help"


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig], ids=lambda c: c.__name__)
def test_every_option_reaches_the_config_with_its_value(cls, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in cls.model_fields:
        value, extra = value_for(cls, name)
        args = [*_args(cls, name, value)]
        for other, v in {**REQUIRED[cls], **extra}.items():
            if other != name:
                args += _args(cls, other, v)
        seen: list = []
        result = CliRunner().invoke(_app(cls, seen), ["run", *args])
        assert result.exit_code == 0, f"{name}: {args}: {result.output}"
        expected = cls.model_validate({**REQUIRED[cls], **extra, name: value})
        assert getattr(seen[0], name) == getattr(expected, name), name


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig], ids=lambda c: c.__name__)
def test_every_field_survives_a_yaml_round_trip(cls, tmp_path) -> None:
    values = {}
    for name in cls.model_fields:
        value, extra = value_for(cls, name)
        values.update(extra)
        values[name] = value
    cfg = cls.model_validate({**values, "out_dir": tmp_path})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert cls.from_yaml(tmp_path / "c.yaml") == cfg


STUDY = {"name": "s", "data": {"corpus": "stdlib", "vocab_size": 512},
         "pretrain": [{"name": "a", "model": "nano", "optimizer": "adamw", "tokens": "20k"}],
         "finetune": {"tasks": ["arith"], "steps": 4, "eval_every": 2,
                      "methods": [{"kind": "lora", "lora_rank": 4, "optimizer": "adamw", "lrs": [1e-3]}]}}


@pytest.mark.parametrize("cls, kind", [(PretrainConfig, "pretrain"), (FinetuneConfig, "finetune")],
                         ids=["pretrain", "finetune"])
def test_every_field_is_a_study_setting_under_its_own_name(cls, kind) -> None:
    """Fields the study sets itself are its own fields, under the config's name; the rest are
    `settings`, which check_study hands to the config (that would refuse a wrong name)."""
    for name in cls.model_fields:
        if name in OWNED[kind]:
            continue
        value, _ = value_for(cls, name)
        study = {**STUDY}
        if kind == "pretrain":
            study["pretrain"] = [{**STUDY["pretrain"][0], "settings": {name: value}}]
        else:
            study["finetune"] = {**STUDY["finetune"], "settings": {name: value}}
        check_study(load_study(study))
    from forgetless.sweep.execute import PASSED
    from forgetless.sweep.study import GridSpec, MethodSpec, PretrainSpec, Study

    own = set(Study.model_fields) | (set(PretrainSpec.model_fields) if kind == "pretrain"
                                     else set(GridSpec.model_fields) | set(MethodSpec.model_fields))
    for name in PASSED[kind]:  # lists of values take the plural: lrs, seeds, tasks
        assert name in own or f"{name}s" in own, f"the study calls {name} something else"


def test_help_defaults_are_the_resolved_ones(tmp_path) -> None:
    """What --help prints for each DEFAULTS entry is what resolved() gives, small and large."""
    for model in ("micro", "gpt2-small"):
        cfg = PretrainConfig(out_dir=tmp_path, model=model).resolved()
        for name, default in PretrainConfig.DEFAULTS.items():
            if name in ("tokens", "eval_every"):  # tokens rounded to whole steps; eval_every at most steps
                continue
            if isinstance(default, ByModel):
                assert getattr(cfg, name) == default.pick(model), name
            elif isinstance(default, Same):
                assert getattr(cfg, name) == getattr(cfg, default.field), name
            elif not hasattr(default, "text"):
                assert getattr(cfg, name) == default, name
        assert cfg.eval_every == min(cfg.steps, PretrainConfig.DEFAULTS["eval_every"].pick(model))
    for base in ({"model": "micro"}, {}):
        cfg = FinetuneConfig(out_dir=tmp_path, base="b", task="arith").resolved(base)
        for name, default in FinetuneConfig.DEFAULTS.items():
            if isinstance(default, ByModel):
                assert getattr(cfg, name) == default.pick(base.get("model")), name
            elif isinstance(default, Same):
                assert getattr(cfg, name) == getattr(cfg, default.field), name
            elif not hasattr(default, "text"):
                assert getattr(cfg, name) == default, name


def test_none_clears_a_setting_and_key_values_parse(tmp_path) -> None:
    seen: list = []
    app = _app(PretrainConfig, seen)
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--grad-clip", "none",
                                      "--optimizer-kwargs", "ns_steps=6", "--track", "tensorboard,wandb"])
    assert result.exit_code == 0, result.output
    assert seen[0].grad_clip is None and seen[0].optimizer_kwargs == {"ns_steps": 6}
    assert seen[0].trackers == ["tensorboard", "wandb"]


def test_a_bad_option_names_the_field_and_its_flag(tmp_path) -> None:
    from forgetless.cli import app

    result = CliRunner().invoke(app, ["pretrain", "--batch-size", "many", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "batch_size (--batch-size): Input should be a valid integer" in result.output
    result = CliRunner().invoke(app, ["pretrain", "--model", "nano"])
    assert result.exit_code == 2 and "out_dir (--out): Field required" in result.output
    result = CliRunner().invoke(app, ["finetune", "--task", "arith", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "base (the BASE argument): Field required" in result.output
    result = CliRunner().invoke(app, ["finetune", "b", "--task", "arith", "--out", str(tmp_path),
                                      "--optimizer-kwargs", "oops"])
    assert result.exit_code == 2 and "optimizer_kwargs (--optimizer-kwargs): 'oops' is not KEY=VALUE" in result.output


def test_old_study_names_still_load_with_one_warning_and_the_same_ids() -> None:
    new = {**STUDY, "eval_diverge_factor": 5.0}
    old = {**STUDY, "divergence_factor": 5.0,
           "finetune": {**STUDY["finetune"], "methods": [{"kind": "lora", "rank": 4, "optimizer": "adamw", "lrs": [1e-3]}]}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old_cells = expand(load_study(old))
    messages = [str(w.message) for w in caught if w.category is DeprecatedName]
    assert len(messages) == 2 and any("'rank' is now 'lora_rank'" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert [c.cell_id for c in old_cells] == [c.cell_id for c in expand(load_study(new))]
    with pytest.raises(Exception, match="give lora_rank only"):
        load_study({**STUDY, "finetune": {**STUDY["finetune"], "methods": [
            {"kind": "lora", "rank": 4, "lora_rank": 4, "optimizer": "adamw", "lrs": [1e-3]}]}})
