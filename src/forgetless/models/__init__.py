"""Models: from-scratch Llama presets, loading any Hugging Face causal LM, and LoRA via PEFT.

Each name below is imported from its module when first used (forgetless.lazy): importing the
package, or `forgetless.models.names` (the preset names a config validates), costs no torch.
"""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "check_weights": "loading", "is_hub_name": "loading", "latest_checkpoint": "loading",
    "load_model": "loading", "quiet": "loading", "resolve_checkpoint": "loading", "set_dropout": "loading",
    "apply_lora": "lora", "default_lora_targets": "lora", "merge_lora": "lora",
    "check_gguf": "gguf", "convert_gguf": "gguf",
    "PRESETS": "presets", "build_model": "presets", "count_parameters": "presets",
})
