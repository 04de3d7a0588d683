"""The shipped presets run what they ran before their fields were derived from the training
configs (issue 25 §2): tests/fixtures/preset_pins.json was written by the code before that change
(commit 7e9fb80) and holds, per study preset, every cell's id and label in expansion order and a
digest of every cell's training config, and per reproduce preset its memorisation configs.

A preset changed on purpose (new budgets, new seeds) changes its pins: rewrite that preset's
entries with `python tests/sweep/test_preset_pins.py NAME` and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import pytest

from forgetless.sweep.execute import train_config
from forgetless.sweep.study import expand, load_study, preset_names

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "preset_pins.json"
PINS = json.loads(FIXTURE.read_text())
# Training-config fields whose values changed on purpose since the pins were taken: the sweep's
# training-loss divergence check takes the config's diverge_factor (10) instead of the study's
# eval-loss factor (4); FinetuneConfig's eval_tokens default changed in the same round.
CHANGED_ON_PURPOSE = ("diverge_factor", "eval_tokens")
# reproduce's probe budgets, as its PRESETS dict held them (16384 when a preset gave none).
PROBE_TOKENS = {"quick": 8192, "cpu-full": 32768, "gpu-quick": 65536, "gpt2": 262144, "llama2-7b": 65536,
                "convergence": 16384}


def _load(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RegimeWarning of the quick preset (18% finetunes)
        return load_study(name)


def _config_digest(cell) -> str:
    cfg = train_config(cell, Path("cell"), "base" if cell.base_id else None).model_dump(mode="json")
    for name in CHANGED_ON_PURPOSE:
        cfg.pop(name)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def current(name: str) -> dict:
    """A preset's pins from the code as it is now."""
    cells = expand(_load(name))
    return {"cells": [[c.cell_id, c.label] for c in cells], "train_configs": [_config_digest(c) for c in cells]}


def test_every_shipped_preset_is_pinned():
    assert sorted(PINS["cells"]) == preset_names()


@pytest.mark.parametrize("name", sorted(PINS["cells"]))
def test_preset_expands_to_the_pinned_cells_and_training_configs(name, monkeypatch):
    monkeypatch.delenv("FORGETLESS_WORKER_THREADS", raising=False)  # a worker's thread count is not a setting
    now = current(name)
    assert len(now["cells"]) == len(PINS["cells"][name])
    assert now["cells"] == PINS["cells"][name]
    changed = [label for (_, label), a, b in zip(now["cells"], now["train_configs"], PINS["train_configs"][name],
                                                 strict=True) if a != b]
    assert changed == []


@pytest.mark.parametrize("name", sorted(PINS["memorization"]))
def test_reproduce_preset_keeps_its_memorisation_configs_and_probe_budget(name):
    """The configs are reproduce's cache key (results.json): equal dumps mean a folder that ran
    the memorisation test before runs it no second time."""
    from forgetless.report.reproduce import PRESETS

    assert name in PRESETS
    extra = _load(name).reproduce
    configs = extra.memorization.configs() if extra.memorization else []
    assert [c.model_dump(mode="json") for c in configs] == (PINS["memorization"][name] or [])
    assert extra.probe_tokens == PROBE_TOKENS[name]


if __name__ == "__main__":  # rewrite the pins of the presets named on the command line
    pins = json.loads(FIXTURE.read_text())
    for preset in sys.argv[1:]:
        fresh = current(preset)
        pins["cells"][preset], pins["train_configs"][preset] = fresh["cells"], fresh["train_configs"]
    FIXTURE.write_text(json.dumps(pins, indent=0) + "\n")
