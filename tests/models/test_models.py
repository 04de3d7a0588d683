"""forgetless.models: presets, loading, LoRA. Checked against hand formulas and plain torch/transformers."""

from __future__ import annotations

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from forgetless.models import (
    PRESETS,
    apply_lora,
    build_model,
    count_parameters,
    default_lora_targets,
    load_model,
    merge_lora,
    set_dropout,
)


def _formula(preset: str, vocab: int) -> int:
    """N = V·d + L·(4d² + 3·d·f) + (2L + 1)·d, written out independently of the code."""
    p = PRESETS[preset]
    d, f, n_layers = p["hidden_size"], p["intermediate_size"], p["num_hidden_layers"]
    return vocab * d + n_layers * (4 * d * d + 3 * d * f) + (2 * n_layers + 1) * d


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate("abcdefghij")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_shapes_and_size(preset: str) -> None:
    with torch.device("meta"):  # gpt2-small without allocating 0.5 GB
        model = build_model(preset, vocab_size=8192 if preset != "gpt2-small" else 50257)
    vocab = model.config.vocab_size
    assert count_parameters(model) == _formula(preset, vocab)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config._attn_implementation == "sdpa"
    assert model.config.hidden_act == "silu"
    assert isinstance(model.model.norm, transformers.models.llama.modeling_llama.LlamaRMSNorm)


def test_preset_sizes_match_the_issue() -> None:
    assert PRESETS["micro"]["num_hidden_layers"] == 4 and PRESETS["micro"]["hidden_size"] == 128
    assert PRESETS["small"]["num_hidden_layers"] == 6 and PRESETS["small"]["hidden_size"] == 256
    assert PRESETS["gpt2-small"]["num_hidden_layers"] == 12 and PRESETS["gpt2-small"]["hidden_size"] == 768
    assert 0.9e6 < _formula("nano", 8192) < 1.1e6
    assert 120e6 < _formula("gpt2-small", 50257) < 128e6


def test_swiglu_mlp_matches_hand_formula() -> None:
    torch.manual_seed(0)
    model = build_model("nano", vocab_size=32)
    mlp = model.model.layers[0].mlp
    x = torch.randn(3, 96)
    ref = (torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), ref)


def test_unknown_preset_names_allowed_values() -> None:
    with pytest.raises(ValueError, match="nano, micro, small, medium, gpt2-small"):
        build_model("huge", vocab_size=100)


def test_save_then_load_gives_same_logits(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("nano", vocab_size=12, num_hidden_layers=1)
    tok = _tokenizer()
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    x = torch.randint(0, 12, (2, 9))
    loaded, loaded_tok = load_model(tmp_path / "ckpt")
    assert loaded_tok("abc")["input_ids"] == tok("abc")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    # A run directory resolves to its newest checkpoint.
    run = tmp_path / "run"
    for step in (5, 20):
        model.save_pretrained(run / "checkpoints" / f"step-{step:06d}")
        tok.save_pretrained(run / "checkpoints" / f"step-{step:06d}")
    assert load_model(run)[0].name_or_path.endswith("step-000020")
    with pytest.raises(FileNotFoundError, match="holds no model"):
        load_model(tmp_path)


def test_lora_freezes_base_and_merge_matches_adapter() -> None:
    torch.manual_seed(0)
    base = build_model("nano", vocab_size=12, num_hidden_layers=1)
    assert default_lora_targets(base) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(base, rank=4)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == 2.0  # alpha = 2·rank by default
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("lm_head" in n or "embed" in n for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 12, (2, 8))
    for _ in range(3):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.base_model.model.state_dict()
    for key, value in before.items():  # base weights bit-for-bit unchanged by training the adapter
        peft_key = key.replace(".weight", ".base_layer.weight") if key in _lora_keys(before) else key
        assert torch.equal(after[peft_key], value), key
    merged = merge_lora(model)
    assert isinstance(merged, transformers.LlamaForCausalLM)
    assert torch.equal(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight,
                       before["model.layers.0.self_attn.q_proj.weight"])  # merging used a copy
    # Merged weight is W + (alpha / r) B A, computed here by hand.
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = q.base_layer.weight + 2.0 * q.lora_B["default"].weight @ q.lora_A["default"].weight
    torch.testing.assert_close(merged.model.layers[0].self_attn.q_proj.weight, expected)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, model(input_ids=x).logits, atol=1e-5, rtol=1e-5)


def _lora_keys(state: dict) -> set[str]:
    return {k for k in state if any(f".{t}.weight" in k for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))}


def test_lora_errors_name_allowed_values() -> None:
    base = build_model("nano", vocab_size=12, num_hidden_layers=1)
    with pytest.raises(ValueError, match="allowed: q_proj"):
        apply_lora(base, rank=2, target_modules=["lm_head"])
    with pytest.raises(ValueError, match="rank"):
        apply_lora(base, rank=0)


def test_set_dropout_reaches_attention() -> None:
    model = build_model("nano", vocab_size=12, num_hidden_layers=1)
    set_dropout(model, 0.1)
    assert model.model.layers[0].self_attn.attention_dropout == 0.1
    assert model.config.attention_dropout == 0.1
    with pytest.raises(ValueError, match="dropout"):
        set_dropout(model, 1.5)
