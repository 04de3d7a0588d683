"""`recommend` on config files of known families, and its command line."""

import json

import pytest
from typer.testing import CliRunner

from forgetless.cli import app
from forgetless.recommend import recommend

SMALL_LLAMA = {"_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"],
               "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
               "vocab_size": 1000, "tie_word_embeddings": False}


def _folder(tmp_path, name, config):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_llama_gets_adamw_and_the_small_model_grid(tmp_path):
    rec = recommend(_folder(tmp_path, "llama", SMALL_LLAMA), task="instruct")
    assert (rec.pretrain_optimizer, rec.how_known, rec.optimizer) == ("adamw", "provenance", "adamw")
    # Parameters by hand: embed 1000*64 + head 1000*64 + 2 layers * (4*64*64 + 3*64*128 + 2*64) + 64
    expected = 2 * 1000 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    assert rec.n_parameters == expected
    assert rec.lr_grid == [3e-5, 1e-4, 3e-4] and rec.method == "full"
    assert rec.cautions == []


def test_seven_billion_config_gets_the_llama2_grid(tmp_path):
    big = dict(SMALL_LLAMA, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    rec = recommend(_folder(tmp_path, "llama7b", big))
    assert 6.5e9 < rec.n_parameters < 7.0e9  # built on the meta device: no memory used
    assert rec.lr_grid == [1e-5, 2e-5, 5e-5, 1e-4]


def test_muon_family_on_reasoning_warns(tmp_path):
    cfg = dict(SMALL_LLAMA, _name_or_path="moonshotai/Moonlight-16B-A3B")
    rec = recommend(_folder(tmp_path, "moon", cfg), task="arith")
    assert rec.optimizer == "muon" and rec.family == "l2->l2"
    assert any("section 4" in c for c in rec.cautions)


def test_pinned_cross_family_optimizer_gets_the_fallback(tmp_path):
    rec = recommend(_folder(tmp_path, "llama", SMALL_LLAMA), optimizer="muon")
    assert rec.optimizer == "muon"
    assert rec.lr_grid == [3e-5, 1e-4]  # the lower half of [3e-5, 1e-4, 3e-4]
    assert any("lower half" in c for c in rec.cautions)
    same = recommend(_folder(tmp_path, "llama2", SMALL_LLAMA), optimizer="lion")  # same family
    assert same.cautions == [] and same.lr_grid == [3e-5, 1e-4, 3e-4]


def test_bad_inputs_name_the_field(tmp_path):
    folder = _folder(tmp_path, "llama", SMALL_LLAMA)
    with pytest.raises(ValueError, match="optimizer: 'adam9'.*allowed"):
        recommend(folder, optimizer="adam9")
    with pytest.raises(ValueError, match="task: 'poetry'"):
        recommend(folder, task="poetry")


def test_cli_json_and_text(tmp_path):
    folder = _folder(tmp_path, "llama", SMALL_LLAMA)
    runner = CliRunner()
    result = runner.invoke(app, ["recommend", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["optimizer"] == "adamw" and data["lr_grid"] == [3e-5, 1e-4, 3e-4]
    result = runner.invoke(app, ["recommend", str(folder), "--task", "arith"])
    assert result.exit_code == 0 and "adamw" in result.output and "Sources" in result.output
    result = runner.invoke(app, ["recommend", str(folder), "--optimizer", "nope"])
    assert result.exit_code == 2 and "allowed" in result.output


def test_unknown_family_without_weights_falls_back_honestly(tmp_path):
    phi = {"_name_or_path": "microsoft/Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"],
           "model_type": "phi3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000}
    with pytest.warns(UserWarning, match="unknown .*finetuning with adamw"):  # seen in a plain script
        rec = recommend(_folder(tmp_path, "phi", phi))
    assert rec.pretrain_optimizer is None and rec.how_known == "unknown"
    assert rec.optimizer == "adamw"  # the stated default guess, not a claim of provenance
    assert any("fingerprint could not be computed" in r for r in rec.reasoning)


@pytest.mark.parametrize(("name", "size"), [("meta-llama/Llama-2-7b-hf", 7e9), ("HuggingFaceTB/SmolLM2-360M", 3.6e8),
                                            ("Qwen/Qwen2.5-0.5B", 5e8), ("gpt2", None), ("mistral-7b-v0.1", 7e9)])
def test_size_from_name(name, size):
    from forgetless.recommend.advise import size_from_name

    assert size_from_name(name) == size


def test_uncached_hub_name_gets_the_grid_of_its_size():
    rec = recommend("meta-llama/Llama-2-7b-hf")  # not cached: the name gives 7B
    assert rec.lr_grid == [1e-5, 2e-5, 5e-5, 1e-4] and rec.n_parameters == 7_000_000_000


def test_unknown_fingerprint_reason_names_the_feature_not_a_false_inequality():
    from forgetless.analysis.fingerprint import Prediction
    from forgetless.recommend.advise import unknown_reason

    out = [{"feature": "attn_in_sv10", "value": 0.27, "lo": 0.015, "hi": 0.087, "excess_sigma": 3.0},
           {"feature": "norm_gain_dev", "value": 0.0, "lo": 0.0074, "hi": 0.11, "excess_sigma": None}]
    unknown = dict(headline="unknown", probability=None, groups=None, groups_without_prior=None,
                   headline_without_prior="unknown", fine_family=None, family="unknown",
                   probabilities={"l2->l2": 1.0}, unknown_distance=3.15, feature_set="weights")
    pred = Prediction(**unknown, distance=1.47, out_of_range=out)
    # None stands for "untrained": beyond any number of sigmas, so it is the reason given.
    assert "norm_gain_dev = 0, outside their range 0.0074..0.11" in unknown_reason(pred)
    far = Prediction(**unknown, distance=4.2)
    assert "distance 4.20 to the nearest family, beyond 3.15" in unknown_reason(far)
