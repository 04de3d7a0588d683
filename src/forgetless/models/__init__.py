"""Models: from-scratch Llama presets, loading any Hugging Face causal LM, and LoRA via PEFT."""

from forgetless.models.loading import (
    check_weights,
    is_hub_name,
    latest_checkpoint,
    load_model,
    quiet,
    resolve_checkpoint,
    set_dropout,
)
from forgetless.models.lora import apply_lora, default_lora_targets, merge_lora
from forgetless.models.presets import PRESETS, build_model, count_parameters

__all__ = [
    "PRESETS",
    "apply_lora",
    "build_model",
    "check_weights",
    "count_parameters",
    "default_lora_targets",
    "is_hub_name",
    "latest_checkpoint",
    "load_model",
    "merge_lora",
    "quiet",
    "resolve_checkpoint",
    "set_dropout",
]
