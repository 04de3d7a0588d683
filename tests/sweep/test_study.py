"""Study files: expansion into cells with stable ids, and refusal of bad studies with the field named."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from forgetless.sweep.study import StudyError, expand, load_study, preset_names

GOOD = {
    "name": "t",
    "data": {"corpus": "stdlib", "vocab_size": 512},
    "pretrain": [
        {"name": "adamw", "model": "nano", "optimizer": "adamw", "tokens": "20k", "seeds": [0, 1]},
        {"name": "muon", "model": "nano", "optimizer": "muon", "tokens": 20000},
    ],
    "finetune": {
        "tasks": ["arith"],
        "steps": 6,
        "eval_every": 3,
        "methods": [
            {"kind": "full", "optimizer": "adamw", "lrs": ["1e-4", 3e-4]},
            {"kind": "lora", "lora_rank": 4, "optimizer": "adamw", "lrs": [1e-3]},
        ],
    },
}


def _with(path: str, value):
    """GOOD with one field replaced, addressed like 'finetune.methods.0.lrs'."""
    study = json.loads(json.dumps(GOOD))
    node = study
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    node[int(last) if last.isdigit() else last] = value
    return study


def test_expansion_counts_order_and_dependencies():
    cells = expand(load_study(GOOD))
    pre = [c for c in cells if c.kind == "pretrain"]
    ft = [c for c in cells if c.kind == "finetune"]
    assert len(pre) == 3  # adamw x 2 seeds + muon x 1
    assert len(ft) == 3 * 1 * 3  # 3 bases x 1 task x (2 + 1) learning rates
    assert cells[: len(pre)] == pre  # bases come first
    assert {c.base_id for c in ft} == {c.cell_id for c in pre}
    assert len({c.cell_id for c in cells}) == len(cells)
    assert pre[0].config["tokens"] == 20000
    assert sorted({c.lr for c in ft}) == [1e-4, 3e-4, 1e-3]


def test_cell_id_is_sha256_of_canonical_config_and_stable():
    a, b = expand(load_study(GOOD)), expand(load_study(GOOD))
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    c = a[-1]
    # hashed under the names the fields had when ids were first stored (rank, alpha,
    # divergence_factor, later diverge_factor, now eval_diverge_factor), so a rename did not change
    # any stored cell's id
    old_names = {"lora_rank": "rank", "lora_alpha": "alpha", "eval_diverge_factor": "divergence_factor"}
    hashed = {old_names.get(k, k): v for k, v in c.config.items()}
    blob = json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode()
    assert c.cell_id == hashlib.sha256(blob).hexdigest()[:16]


def test_labels_do_not_change_ids_but_settings_do():
    base = {c.cell_id for c in expand(load_study(GOOD))}
    renamed = _with("finetune.methods.0.name", "sft")
    assert {c.cell_id for c in expand(load_study(renamed))} == base
    changed = _with("finetune.steps", 9)
    ids = {c.cell_id for c in expand(load_study(changed))}
    assert ids & base == {c.cell_id for c in expand(load_study(GOOD)) if c.kind == "pretrain"}


def test_loads_yaml_file_and_presets(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert load_study(path).name == "t"
    assert {"quick", "cpu-full", "gpu-quick", "remedies", "gpt2", "llama2-7b"} <= set(preset_names())
    quick = expand(load_study("quick"))
    pretrained = {c.config["optimizer"] for c in quick if c.kind == "pretrain"}
    assert pretrained == {"adamw", "muon", "coltop1", "rowtop1"}  # col/row top-1 for the probe only
    # Three pretraining seeds per optimizer: three units of evidence, the fewest a verdict needs.
    assert sorted(c.config["seed"] for c in quick if c.kind == "pretrain") == [0] * 4 + [1] * 4 + [2] * 4
    full = expand(load_study("cpu-full"))
    assert {c.config["optimizer"] for c in full if c.kind == "pretrain"} == {"adamw", "muon", "coltop1", "rowtop1"}
    assert {c.meta["base"] for c in quick if c.kind == "finetune"} == {
        f"{o}/s{s}" for o in ("adamw", "muon") for s in (0, 1, 2)}
    gpt2 = load_study("gpt2")  # the paper's A.1.1 numbers survive the round trip
    alpaca = gpt2.finetune[0]
    assert (alpaca.steps, alpaca.eval_every) == (800, 200)
    assert alpaca.methods[0].lrs == [3e-5, 5e-5, 1e-4, 3e-4, 5e-4]
    assert gpt2.pretrain[0].tokens == 8_000_000_000


@pytest.mark.parametrize(
    ("path", "value", "field", "hint"),
    [
        ("pretrain.0.optimizer", "adamx", "pretrain[0].optimizer", "allowed: adamw"),
        ("finetune.methods.1.optimizer", "sgdd", "finetune[0].methods[1].optimizer", "allowed:"),
        ("finetune.methods.0.lrs", [], "finetune[0].methods[0].lrs", "at least 1"),
        ("finetune.methods", [], "finetune[0].methods", "at least 1"),
        ("finetune.methods.0.lrs", [1e-4, -3e-4], "finetune[0].methods[0].lrs[1]", "greater than 0"),
        ("finetune.bases", ["adamw", "lion"], "finetune[0].bases[1]", "no base named 'lion'"),
        ("pretrain.0.tokens", "lots", "pretrain[0].tokens", "tokens must be a count like 5M"),
        ("finetune.eval_every", 7, "eval_every", "larger than steps"),
        ("finetune.methods.1.lora_rank", None, "lora_rank", "needs a rank"),
        ("finetune.stepz", 3, "finetune[0].stepz", "unknown field; did you mean steps?"),
    ],
)
def test_bad_studies_are_refused_with_the_field_named(path, value, field, hint):
    with pytest.raises(StudyError) as err:
        load_study(_with(path, value))
    assert field in str(err.value)
    assert hint in str(err.value)


def test_training_box_refusals_come_before_any_work():
    """Fields only the training box knows (model presets, settings) are checked by check_study,
    which `forgetless sweep` runs before it starts anything."""
    from forgetless.sweep.execute import check_study

    for study in preset_names():
        check_study(load_study(study))
    # the model is the config's field, checked as the config checks it (names only, no torch)
    with pytest.raises(StudyError, match=r"pretrain\[0\].model: model 'huge' is not a preset; allowed: nano"):
        load_study(_with("pretrain.0.model", "huge"))
    bad = _with("finetune.settings", {"batch_sizee": 4})
    bad["finetune"]["methods"][1]["settings"] = {"lr": 1.0}
    with pytest.raises(StudyError) as err:
        check_study(load_study(bad))
    text = str(err.value)
    assert "batch_sizee: unknown field; did you mean batch_size?; allowed: " in text
    assert "settings may not set ['lr']" in text


def test_not_a_file_nor_preset():
    with pytest.raises(StudyError, match="neither a file nor a preset"):
        load_study("no-such-study")
