"""`build` routing on real Hugging Face Llama / GPT-2 / PEFT models, and orientation of Conv1D."""

import logging

import peft
import torch
import transformers
from torch import nn

from forgetless.optim import build, route

logging.getLogger("transformers").setLevel(logging.ERROR)


def _names(pairs):
    return {n for n, _ in pairs}


def _llama():
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2)
    return transformers.LlamaForCausalLM(cfg)


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def test_llama_routing():
    model = _llama()
    parts = route(model, "muon")
    rule = _names(parts["rule"])
    assert rule == {f"model.layers.{i}.{m}.weight" for i in range(2) for m in
                    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]}
    adamw = _names(parts["adamw"])
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
            "model.layers.0.input_layernorm.weight"} <= adamw
    assert not parts["rule_transposed"]
    assert len(rule) + len(adamw) == len(list(model.parameters()))


def test_gpt2_routing_tied_head_and_conv1d_orientation():
    model = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    parts = route(model, "coltop1")
    assert not parts["rule"]
    transposed = _names(parts["rule_transposed"])
    assert transposed == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                          for m in ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]}
    adamw = _names(parts["adamw"])
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
            "transformer.h.0.ln_1.bias", "transformer.h.1.mlp.c_fc.bias"} <= adamw
    ids = [id(p) for part in parts.values() for _, p in part]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # the tied tensor once


def test_conv1d_step_is_the_transpose_of_the_linear_step():
    # The same layer stored as nn.Linear (d_out, d_in) and as GPT-2 Conv1D (d_in, d_out) must get
    # the same column/row update: columns are inputs in both.
    conv1d_cls = transformers.pytorch_utils.Conv1D
    for name in ["coltop1", "rowtop1", "colnorm", "rownorm"]:
        lin = nn.Sequential(nn.Linear(12, 20, bias=False))
        conv = nn.Sequential(conv1d_cls(20, 12))  # nf = d_out, nx = d_in; weight (12, 20)
        with torch.no_grad():
            conv[0].weight.copy_(lin[0].weight.t())
        x = torch.randn(7, 12, generator=torch.Generator().manual_seed(0))
        opts = [build(m, name, lr=0.1, momentum=0.0) for m in (lin, conv)]
        assert opts[1].param_groups[0]["transposed"] and not opts[0].param_groups[0]["transposed"]
        for m, opt in zip((lin, conv), opts, strict=True):
            m(x).square().sum().backward()
            opt.step()
        torch.testing.assert_close(conv[0].weight.t(), lin[0].weight, rtol=0, atol=1e-6)


def test_transposed_patterns_for_named_parameters():
    w = nn.Parameter(torch.randn(4, 6))
    parts = route([("h.0.attn.c_attn.weight", w)], "colnorm", transposed_patterns=[r"c_attn"])
    assert _names(parts["rule_transposed"]) == {"h.0.attn.c_attn.weight"}


def test_peft_lora_matrices_go_to_the_rule_and_frozen_weights_are_skipped():
    model = peft.get_peft_model(_llama(), peft.LoraConfig(r=4, target_modules=["q_proj",
                                                                                "v_proj"]))
    parts = route(model, "muon")
    rule = _names(parts["rule"])
    assert len(rule) == 8 and all(".lora_A." in n or ".lora_B." in n for n in rule)
    assert not parts["adamw"] and not parts["rule_transposed"]
    opt = build(model, "muon", lr=1e-3)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable


def test_adamw_name_sends_everything_to_adamw_and_groups_carry_lr_rule_names():
    model = _llama()
    opt = build(model, "adamw", lr=1e-3, weight_decay=0.1)
    assert {g["rule"] for g in opt.param_groups} == {"adamw"}
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert all(p.ndim >= 2 for g in decayed for p in g["params"])
    assert all(len(g["param_names"]) == len(g["params"]) for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_separate_adamw_lr_and_patterns():
    model = _llama()
    opt = build(model, "muon", lr=2e-2, adamw_lr=3e-3,
                hidden_patterns=[r"mlp\.(up|down)_proj"])
    by_rule = {g["rule"]: g for g in opt.param_groups}
    assert by_rule["muon"]["lr"] == 2e-2 and by_rule["adamw"]["lr"] == 3e-3
    assert all("mlp" in n for n in by_rule["muon"]["param_names"])
    assert len(by_rule["muon"]["params"]) == 4
    opt = build(model, "muon", lr=1e-3, adamw_patterns=[r"embed", r"norm"])  # head to the rule
    muon_names = next(g for g in opt.param_groups if g["rule"] == "muon")["param_names"]
    assert "lm_head.weight" in muon_names


def test_built_optimizer_trains_a_llama():
    model = _llama()
    opt = build(model, "muon", lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
