"""Which optimizer pretrained a checkpoint, when its provenance is documented.

The facts live in `provenance.json` beside this file (family, optimizer, source, and whether the
source states it or it is assumed). A checkpoint is matched from what it says about itself: a
forgetless run config, its `_name_or_path`, folder name, model card `base_model`, and config
`model_type` / `architectures`. Nothing is downloaded: a hub name that is not in the local cache
is matched on the name alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from forgetless.untrusted import CONFIG_JSON_MAX_BYTES, load_json, load_yaml


@dataclass(frozen=True)
class Provenance:
    family: str
    optimizer: str  # a forgetless optimizer name
    variant: str
    status: str  # "documented" or "assumed"
    source: str
    matched_on: str  # which of the checkpoint's facts matched, for the reasoning shown to users


@dataclass
class ModelFacts:
    """What a checkpoint says about itself, gathered without loading any weights."""

    ref: str
    names: list[tuple[str, str]] = field(default_factory=list)  # (where, value) to match patterns on
    model_type: str | None = None
    architectures: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    forgetless_optimizer: str | None = None  # set when a forgetless run config records it
    forgetless_config: Path | None = None


@cache
def registry() -> list[dict]:
    text = resources.files("forgetless.recommend").joinpath("provenance.json").read_text()
    return json.loads(text)["families"]


def _card_base_models(folder: Path) -> list[str]:
    """`base_model` entries of a model card's YAML front matter (README.md)."""
    card = folder / "README.md"
    if not card.is_file():
        return []
    text = card.read_text(errors="replace")
    if not text.startswith("---"):
        return []
    try:
        meta = load_yaml(text.split("---", 2)[1]) or {}  # a downloaded card: bounded (no alias bomb)
    except yaml.YAMLError:
        return []
    base = meta.get("base_model") if isinstance(meta, dict) else None
    return [base] if isinstance(base, str) else [b for b in base or [] if isinstance(b, str)]


def _forgetless_pretrain_optimizer(folder: Path, depth: int = 0) -> tuple[str | None, Path | None]:
    """The pretraining optimizer recorded by a forgetless run, following finetunes to their base.

    A checkpoint sits in `<run>/checkpoints/<name>/` or is the run folder itself, so the run
    config is looked for in the folder and up to two parents.
    """
    if depth > 4:
        return None, None
    for candidate in (folder, folder.parent, folder.parent.parent):
        cfg_path = candidate / "config.yaml"
        if not cfg_path.is_file():
            continue
        try:
            cfg = load_yaml(cfg_path.read_text(errors="replace")) or {}
        except yaml.YAMLError:
            continue
        if not isinstance(cfg, dict) or "optimizer" not in cfg:
            continue
        base = cfg.get("base")
        if not base:  # a pretraining run: its optimizer is the answer
            return str(cfg["optimizer"]), cfg_path
        base_path = Path(str(base))
        if not base_path.is_absolute():
            base_path = (candidate / base_path) if (candidate / base_path).exists() else base_path
        if base_path.exists():
            return _forgetless_pretrain_optimizer(base_path, depth + 1)
        return None, cfg_path
    return None, None


def model_facts(model: str | Path) -> ModelFacts:
    ref = str(model)
    facts = ModelFacts(ref=ref, names=[("name", ref)])
    folder = Path(ref)
    config: dict = {}
    if folder.is_dir():
        facts.names.append(("folder name", folder.resolve().name))
        if (folder / "config.json").is_file():
            try:  # bounded, and only a mapping is a config (a list or a deep nest is not)
                config = load_json((folder / "config.json").read_bytes(), max_bytes=CONFIG_JSON_MAX_BYTES)
            except ValueError:
                config = {}
            config = config if isinstance(config, dict) else {}
        facts.names += [("model card base_model", b) for b in _card_base_models(folder)]
        facts.forgetless_optimizer, facts.forgetless_config = _forgetless_pretrain_optimizer(folder)
    else:
        try:  # a hub name already in the local cache; never a download
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(ref, local_files_only=True, trust_remote_code=False).to_dict()
        except Exception:  # not cached, or not a model: match on the name alone
            config = {}
    facts.config = config
    if config.get("_name_or_path"):
        facts.names.append(("config _name_or_path", str(config["_name_or_path"])))
    facts.model_type = config.get("model_type")
    facts.architectures = list(config.get("architectures") or [])
    return facts


def lookup(model: str | Path | ModelFacts) -> Provenance | None:
    """The documented pretraining optimizer of `model`, or None when its family is unknown."""
    facts = model if isinstance(model, ModelFacts) else model_facts(model)
    entries = registry()
    if facts.forgetless_optimizer:
        own = next(e for e in entries if e["family"] == "forgetless")
        return Provenance(
            family="forgetless",
            optimizer=facts.forgetless_optimizer,
            variant=own["variant"],
            status="documented",
            source=f"{own['source']} ({facts.forgetless_config})",
            matched_on=f"run config {facts.forgetless_config}",
        )
    # Names first (most specific: "Moonlight" is a deepseek_v3 model_type), then model types.
    for where, value in facts.names:
        for entry in entries:
            if any(re.search(p, value, flags=re.IGNORECASE) for p in entry["patterns"]):
                return _provenance(entry, f"{where} {value!r}")
    # An architecture alone is a guess, never documentation: any optimizer can train a Llama
    # (forgetless's own Muon bases are Llama-architecture), so such a match is "assumed".
    kinds = [facts.model_type or ""] + [a.lower() for a in facts.architectures]
    for entry in entries:
        for kind in entry["model_types"]:
            if kind in kinds or any(a.startswith(kind.replace("_", "")) for a in kinds):
                return _provenance(entry, f"model_type/architectures {kinds} alone", "assumed")
    return None


def _provenance(entry: dict, matched_on: str, status: str | None = None) -> Provenance:
    return Provenance(
        family=entry["family"],
        optimizer=entry["optimizer"],
        variant=entry["variant"],
        status=status or entry["status"],
        source=entry["source"],
        matched_on=matched_on,
    )
