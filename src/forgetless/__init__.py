"""forgetless: finetune language models without forgetting what pretraining taught them."""

__version__ = "0.1.0"
