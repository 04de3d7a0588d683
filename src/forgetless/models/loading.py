"""Load any causal LM: a Hugging Face checkpoint directory, a hub name, or a forgetless run directory.

A forgetless run directory (it has `checkpoints/step-*/`) resolves to its newest checkpoint, so
`load_model("runs/muon-small")` works; a directory holding only a PEFT adapter is loaded on its base
model and merged. Nothing is downloaded unless the name is a hub name: the `org/name` form, with
no local path by that name (nor a local folder `org`), and then only by `transformers` itself,
from the hub the user configured. Any other name that does not exist is "no such checkpoint".
Weight files are checked (safetensors header and length) before loading, so a truncated or
corrupt file is named in one line instead of failing deep inside transformers.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import transformers

from forgetless.errors import CorruptCheckpoint, NoCheckpoint, one_line
from forgetless.untrusted import CONFIG_JSON_MAX_BYTES, load_json, refuse_custom_code

# Every loader gets this: transformers would otherwise offer (on a terminal) to import the Python
# files of a checkpoint whose config has an `auto_map`. resolve_checkpoint refuses those first.
NO_CODE = {"trust_remote_code": False}

_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def latest_checkpoint(run_dir: str | Path, skip: set[Path] | frozenset = frozenset()) -> Path | None:
    """The newest `checkpoints/step-NNNNNN` directory of a run directory (not in `skip`), or None."""
    steps = sorted(Path(run_dir).glob("checkpoints/step-*"), key=lambda p: _step_of(p))
    steps = [p for p in steps if p not in skip
             and ((p / "config.json").is_file() or (p / "adapter_config.json").is_file())]
    return steps[-1] if steps else None


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def is_hub_name(name: str | Path) -> bool:
    """`org/name` with no local path by that name and no local folder `org` (`runs/typo` is a
    mistyped local path, not a hub model)."""
    text = str(name)
    if not _HUB_NAME.fullmatch(text) or Path(text).exists():
        return False
    return not Path(text.split("/", 1)[0]).is_dir()


def resolve_checkpoint(path_or_name: str | Path) -> str:
    """A path to a model directory (a run directory becomes its newest checkpoint), or the hub
    name; NoCheckpoint for a path that does not exist or holds no model, CorruptCheckpoint for
    damaged weight files (headers only: cheap), CustomCode for a checkpoint whose config asks for
    its own Python code (`auto_map`: never imported, never asked about)."""
    source = _resolve(path_or_name)
    refuse_custom_code(source)
    check_weights(source)
    return source


def _resolve(path_or_name: str | Path) -> str:
    path = Path(path_or_name)
    if not path.exists():
        if is_hub_name(path_or_name):
            return str(path_or_name)
        raise NoCheckpoint(f"no such checkpoint: {path_or_name} (no such local path; a hub model is "
                           "named org/name)")
    if not path.is_dir():
        if path.suffix.lower() == ".gguf":
            raise NoCheckpoint(f"{path} is a GGUF file: convert it once, then give the directory: "
                               f"forgetless convert {path} --out {path.with_suffix('')}-hf")
        raise NoCheckpoint(f"{path} is a file, not a checkpoint: give its directory (config.json, "
                           "model.safetensors) or a forgetless run directory")
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise NoCheckpoint(
                f"{path} holds no model: expected a Hugging Face checkpoint (config.json) or a forgetless "
                "run directory with checkpoints/step-*/"
            )
        return str(ckpt)
    return str(path_or_name)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") for
    the duration, restoring the user's setting after."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    allowed = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in allowed:
        raise ValueError(f"dtype {dtype!r} is unknown; allowed: {', '.join(allowed)}")
    return allowed[dtype]


def load_model(
    path_or_name: str | Path, *, dtype: torch.dtype | str = torch.float32, **config_overrides: Any
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """(model, tokenizer) of a causal LM, in `dtype` (fp32 by default: the master weights of training).

    `config_overrides` go to `from_pretrained` (e.g. `attention_dropout=0.1`). The sdpa attention
    kernel is used where the architecture supports it.
    """
    source = resolve_checkpoint(path_or_name)  # weight files checked there
    with quiet():
        return _load(source, _as_dtype(dtype), config_overrides)


def check_weights(source: str | Path) -> None:
    """Every *.safetensors file of a local checkpoint (and its adapter/) has a readable header and
    the length it announces; CorruptCheckpoint naming the file otherwise. A hub name passes."""
    from safetensors import safe_open

    path = Path(source)
    if not path.is_dir():
        return
    for file in sorted([*path.glob("*.safetensors"), *path.glob("adapter/*.safetensors")]):
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception as err:  # safetensors raises its own SafetensorError (or OSError)
            raise CorruptCheckpoint(f"{file} is truncated or corrupt ({one_line(err)}); restore it or "
                                    "save the model again") from None


def _load(source: str, dtype: torch.dtype, config_overrides: dict[str, Any]):
    adapter_cfg = Path(source) / "adapter_config.json"
    if adapter_cfg.is_file() and not (Path(source) / "config.json").is_file():
        import peft

        base = load_json(adapter_cfg.read_bytes(), max_bytes=CONFIG_JSON_MAX_BYTES)["base_model_name_or_path"]
        refuse_custom_code(base)  # the adapter's base model is loaded too
        model = peft.AutoPeftModelForCausalLM.from_pretrained(source, dtype=dtype, **NO_CODE).merge_and_unload()
        tok_source = source if _has_tokenizer(source) else base
    else:
        with _no_load_report():  # missing weights are refused below in one line, not a table
            try:
                model, info = transformers.AutoModelForCausalLM.from_pretrained(
                    source, dtype=dtype, attn_implementation="sdpa", output_loading_info=True, **NO_CODE,
                    **config_overrides
                )
            except ValueError as err:
                if "sdpa" not in str(err).lower():
                    raise
                # An architecture without an sdpa kernel: fall back to its own attention.
                model, info = transformers.AutoModelForCausalLM.from_pretrained(
                    source, dtype=dtype, output_loading_info=True, **NO_CODE, **config_overrides)
        _refuse_missing(source, info)
        if info.get("unexpected_keys"):  # said in one line instead of transformers' report table
            keys = sorted(info["unexpected_keys"])
            warnings.warn(f"{source}: {len(keys)} tensor(s) in the checkpoint are not used by the model "
                          f"(e.g. {', '.join(keys[:3])})", stacklevel=2)
        tok_source = source
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(tok_source, **NO_CODE)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"no tokenizer found with the model at {tok_source}: {err}") from err
    return model, tokenizer


@contextlib.contextmanager
def _no_load_report() -> Iterator[None]:
    """transformers' own loading report (a table of missing/unexpected keys) silenced."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _refuse_missing(source: str, info: dict) -> None:
    """CorruptCheckpoint when weights the model needs are not in the checkpoint (transformers would
    initialise them at random and carry on: a base missing most tensors finetuned with rc 0) or
    have another shape. Weights the class itself expects to be absent (tied or ignored ones) are
    not in transformers' missing list."""
    missing, mismatched = list(info.get("missing_keys") or []), list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        what = (f"{len(missing)} weight(s) missing (e.g. {', '.join(sorted(missing)[:3])})" if missing
                else f"{len(mismatched)} weight(s) of another shape (e.g. {_first(mismatched[0])})")
        raise CorruptCheckpoint(f"{source}: {what}; the model would start from random weights there: "
                                "restore the checkpoint's weight files")


def _first(entry) -> str:
    return str(entry[0] if isinstance(entry, (tuple, list)) else entry)


def _has_tokenizer(path: str) -> bool:
    return any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


# The config fields of a dropout probability, across architectures.
DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout probability of a model to p (in place).

    HF Llama has one dropout, on the attention probabilities, read from each attention module's
    `attention_dropout` attribute at forward time; other architectures use `nn.Dropout` modules.
    Both are set, and the config too so that a saved checkpoint records it.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p
    config = getattr(model, "config", None)
    for key in DROPOUT_KEYS:
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, p)


def check_model_overrides(preset: str, overrides: dict[str, Any]) -> None:
    """BadValue for `model_overrides` the preset cannot be built with, before any work: a key that
    LlamaConfig does not have (a typo used to be accepted silently), a value of the wrong kind, or
    head counts that do not divide (found only in the first forward pass before)."""
    import difflib

    from forgetless.errors import BadValue
    from forgetless.models.presets import PRESETS

    if not overrides or preset not in PRESETS:
        return
    known = sorted(k for k in transformers.LlamaConfig().to_dict() if not k.startswith("_"))
    for key in overrides:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            raise BadValue(f"model_overrides: {key!r} is not a LlamaConfig field"
                           + (f"; did you mean {near[0]!r}?" if near else ""))
    merged = {**PRESETS[preset], **overrides}
    try:
        config = transformers.LlamaConfig(**merged)
        heads, kv = int(config.num_attention_heads), int(config.num_key_value_heads or config.num_attention_heads)
        if heads < 1 or kv < 1 or config.hidden_size % heads or heads % kv:
            raise ValueError(f"hidden_size {config.hidden_size} must be a multiple of num_attention_heads "
                             f"{heads}, itself a multiple of num_key_value_heads {kv}")
        with torch.device("meta"):  # builds every layer's shapes, allocates nothing
            transformers.LlamaForCausalLM(config)
    except Exception as err:  # noqa: BLE001 - transformers' own validation errors vary by version
        raise BadValue(f"model_overrides {overrides}: the {preset} model cannot be built ({one_line(err)})") from None
