"""Command-line options generated from a config class's fields (one declaration per setting).

`config_parameters(FinetuneConfig)` turns every pydantic field into a typer option: the flag is the
field's name with dashes (`batch_size` -> `--batch-size`, plus any `flags` the field declares in
`json_schema_extra`), the help is its description followed by its default (the field's own, or the
class's DEFAULTS entry for a field that `resolved()` fills), and the allowed values of a Literal.
Values reach pydantic as the user typed them, so one validator (the field's) checks the command
line, YAML files and study settings alike, and its message names the field.

    bool            --x/--no-x
    list[...]       repeatable, and comma-separated values are split: --track tensorboard,wandb
    dict[str, ...]  repeatable KEY=VALUE (values read as YAML: --optimizer-kwargs ns_steps=6)
    anything else   one value; 'none' clears a field whose default is not None (--grad-clip none)
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal

import typer
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from forgetless.train.config import show


def flags(name: str, field: FieldInfo) -> list[str]:
    """The option names of a field: its declared `flags`, else --name-with-dashes."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return list(extra.get("flags") or [f"--{name.replace('_', '-')}"])


def _is_argument(field: FieldInfo) -> bool:
    return isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("cli") == "argument"


def _shape(annotation: Any) -> tuple[str, Any]:
    """('bool' | 'list' | 'dict' | 'value', inner type) of a field annotation, None stripped."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "bool", bool
    if origin is list:
        return "list", typing.get_args(annotation)[0]
    if origin is dict:
        return "dict", typing.get_args(annotation)[1]
    return "value", annotation


def _metavar(inner: Any) -> str:
    if typing.get_origin(inner) is Literal:
        return "[" + "|".join(str(v) for v in typing.get_args(inner)) + "]"
    return {int: "INT", float: "FLOAT"}.get(inner, "TEXT")


def help_text(cls: type[BaseModel], name: str) -> str:
    """The field's description, its allowed values and its default, as --help shows them."""
    field = cls.model_fields[name]
    text = (field.description or name).rstrip(".")
    kind, inner = _shape(field.annotation)
    if typing.get_origin(inner) is Literal and kind == "value":
        text += f"; one of {', '.join(str(v) for v in typing.get_args(inner))}"
    if kind == "list":
        text += " (repeatable or comma-separated)"
    if kind == "dict":
        text += " (KEY=VALUE, repeatable)"
    default = getattr(cls, "DEFAULTS", {}).get(name)
    if default is None and not field.is_required() and field.default not in (None, [], {}):
        default = field.default
        if kind == "value" and type(None) in typing.get_args(field.annotation):
            text += "; 'none' turns it off"
    if default is not None and field.default_factory is None:
        text += f". (default: {show(default)})"
    elif field.is_required():
        text += ". (required)"
    return text


def config_parameters(cls: type[BaseModel], panels: tuple[str, str] | None = None) -> list[inspect.Parameter]:
    """A typer parameter per field of `cls`, every one defaulting to "not given" (None). With
    `panels` (own, shared), --help groups the class's own fields apart from inherited ones."""
    params = []
    own = set(vars(cls).get("__annotations__", {}))
    counts = {f for d in cls.__pydantic_decorators__.field_validators.values()
              if d.info.mode == "before" for f in d.info.fields}  # steps, tokens: 5M, 2k
    names = sorted(cls.model_fields, key=lambda n: n not in own)  # the class's own fields first
    for name in names:
        field = cls.model_fields[name]
        kind, inner = _shape(field.annotation)
        help_ = help_text(cls, name)
        group = (panels[0] if name in own else panels[1]) if panels else None
        if _is_argument(field):
            default = typer.Argument(None, help=help_, show_default=False, metavar=name.upper())
            annotation: Any = str | None
        elif kind == "bool":
            first = flags(name, field)[0]
            default = typer.Option(None, f"{first}/--no-{first[2:]}", help=help_, show_default=False,
                                   rich_help_panel=group)
            annotation = bool | None
        else:
            many = kind in ("list", "dict")
            default = typer.Option(None, *flags(name, field), help=help_, show_default=False,
                                   metavar="KEY=VALUE" if kind == "dict" else "COUNT" if inner is int and name in counts
                                   else _metavar(inner), rich_help_panel=group)
            annotation = list[str] | None if many else str | None
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def given_fields(cls: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """The options a user gave, shaped for `cls.model_validate` (not given: left out; 'none':
    None, to clear a field whose default is set)."""
    own_parsers = {f for d in cls.__pydantic_decorators__.field_validators.values()
                   if d.info.mode == "before" for f in d.info.fields}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or name not in cls.model_fields:
            continue
        field = cls.model_fields[name]
        kind, inner = _shape(field.annotation)
        if kind == "list":
            value = [p.strip() for item in value for p in str(item).split(",") if p.strip()]
        elif kind == "dict" and name not in own_parsers:  # a field that parses its own text keeps it
            value = _key_values(flag_of(cls, name), value, parse=inner is Any)
        elif kind == "value" and str(value).strip().lower() == "none" and type(None) in typing.get_args(field.annotation):
            value = None
        out[name] = value
    return out


def _key_values(name: str, items: list[str], parse: bool) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for part in (p.strip() for item in items for p in str(item).split(",")):
        key, sep, text = (s.strip() for s in part.partition("="))
        if not part:
            continue
        if not sep or not key:
            raise ValueError(f"{name}: {part!r} is not KEY=VALUE")
        pairs[key] = yaml.safe_load(text) if parse else text
    return pairs


def flag_of(cls: type[BaseModel], name: str) -> str:
    """How the command line spells a field, for messages ('out_dir (--out)')."""
    field = cls.model_fields.get(name)
    if field is None:
        return name
    if _is_argument(field):
        return f"{name} (the {name.upper()} argument)"
    return f"{name} ({flags(name, field)[0]})"
