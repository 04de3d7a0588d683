"""Provenance lookup on real config files of known families, written as their hubs ship them."""

import json

import pytest
import yaml

from forgetless.recommend import lookup, model_facts


def _checkpoint(tmp_path, name, config, card=None):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


LLAMA2 = {"_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"],
          "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32}
# Moonlight ships a DeepSeek-V3 architecture: its name, not its model_type, must decide.
MOONLIGHT = {"_name_or_path": "moonshotai/Moonlight-16B-A3B", "architectures": ["DeepseekV3ForCausalLM"],
             "model_type": "deepseek_v3"}
QWEN = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}
GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 12}
PHI3 = {"_name_or_path": "microsoft/Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3"}


@pytest.mark.parametrize(
    ("name", "config", "family", "optimizer"),
    [
        ("llama2", LLAMA2, "Llama", "adamw"),
        ("moonlight", MOONLIGHT, "Moonlight", "muon"),
        ("some-finetune", QWEN, "Qwen", "adamw"),  # no name: matched by model_type
        ("my-gpt", GPT2, "GPT-2", "adamw"),
    ],
)
def test_known_families(tmp_path, name, config, family, optimizer):
    prov = lookup(_checkpoint(tmp_path, name, config))
    assert prov is not None
    assert (prov.family, prov.optimizer) == (family, optimizer)
    assert prov.source


def test_model_card_base_model_decides(tmp_path):
    card = "---\nbase_model: moonshotai/Kimi-K2-Instruct\nlicense: other\n---\n# a finetune\n"
    folder = _checkpoint(tmp_path, "anon", {"model_type": "unknown_kind"}, card=card)
    prov = lookup(folder)
    assert prov is not None and prov.family == "Kimi K2" and prov.optimizer == "muon"
    assert "base_model" in prov.matched_on


def test_unknown_family_is_none(tmp_path):
    assert lookup(_checkpoint(tmp_path, "phi", PHI3)) is None


def test_hub_name_matched_offline_without_download():
    prov = lookup("meta-llama/Meta-Llama-3-8B")  # not cached here: the name alone decides
    assert prov is not None and prov.optimizer == "adamw"


def test_forgetless_run_config_follows_finetune_to_its_base(tmp_path):
    base = tmp_path / "runs" / "muon-base"
    (base / "checkpoints" / "final").mkdir(parents=True)
    (base / "config.yaml").write_text(yaml.safe_dump({"optimizer": "muon", "model": "nano"}))
    ft = tmp_path / "runs" / "ft"
    (ft / "checkpoints" / "final").mkdir(parents=True)
    (ft / "config.yaml").write_text(yaml.safe_dump({"optimizer": "adamw", "base": str(base)}))
    facts = model_facts(ft / "checkpoints" / "final")
    assert facts.forgetless_optimizer == "muon"  # the finetune's base was pretrained with Muon
    assert lookup(facts).optimizer == "muon"
