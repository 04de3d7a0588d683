"""From-scratch model presets: Llama-style causal LMs (SwiGLU, RMSNorm, RoPE, tied embeddings).

Every preset is a dict of `transformers.LlamaConfig` keyword arguments, so every model the project
trains is a plain Hugging Face `LlamaForCausalLM`: it saves with `save_pretrained` and loads back
with `AutoModelForCausalLM`.

Parameter count (tied embeddings, no biases), with d = width, f = SwiGLU width, L = layers, V = vocab:
    N = V·d + L·(4·d² + 3·d·f) + (2L + 1)·d        (attention q,k,v,o; gate, up, down; RMSNorm gains)
SwiGLU's width is f ≈ (8/3)·d, which gives it the parameters of a 4·d GELU MLP (3·d·f ≈ 2·d·4d),
rounded up to a multiple of 8 for the matrix kernels.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers


def _swiglu_width(d: int) -> int:
    """(8/3)·d rounded up to a multiple of 8."""
    return 8 * ((8 * d // 3 + 7) // 8)


def _preset(layers: int, width: int, heads: int, context: int) -> dict[str, Any]:
    return dict(
        num_hidden_layers=layers,
        hidden_size=width,
        intermediate_size=_swiglu_width(width),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=context,
        hidden_act="silu",  # SwiGLU: down(silu(gate(x)) * up(x))
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        initializer_range=0.02,
    )


# nano ≈ 1.0M parameters at vocab 8192 (0.79M of them the embedding); micro is the 1.3M-parameter
# pilot model of docs/pilot.md (vocab 4096); gpt2-small is the paper's GPT-2 small with SwiGLU (≈124M
# parameters at GPT-2's vocabulary of 50257).
PRESETS: dict[str, dict[str, Any]] = {
    "nano": _preset(layers=2, width=96, heads=4, context=1024),
    "micro": _preset(layers=4, width=128, heads=4, context=1024),
    "small": _preset(layers=6, width=256, heads=4, context=1024),
    # ≈ 29M parameters at vocab 8192: more than 20x micro, the model of the gpu-quick preset.
    "medium": _preset(layers=8, width=512, heads=8, context=1024),
    "gpt2-small": _preset(layers=12, width=768, heads=12, context=1024),
}


def build_model(preset: str, vocab_size: int, **overrides: Any) -> transformers.LlamaForCausalLM:
    """A freshly initialised `LlamaForCausalLM` of the named preset, fp32, sdpa attention.

    `overrides` are `LlamaConfig` keyword arguments that replace the preset's (e.g. `num_hidden_layers=3`).
    Initialisation uses torch's global RNG: seed it first for a reproducible model.
    """
    if preset not in PRESETS:
        raise ValueError(f"model preset {preset!r} is unknown; allowed: {', '.join(PRESETS)}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    kwargs = {**PRESETS[preset], **overrides}
    kwargs.setdefault("bos_token_id", None)
    kwargs.setdefault("eos_token_id", None)
    config = transformers.LlamaConfig(vocab_size=vocab_size, attn_implementation="sdpa", **kwargs)
    model = transformers.LlamaForCausalLM(config).to(torch.float32)
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
