"""Prompt templates of the public SFT datasets, byte for byte (shared by the dataset adapters and
the reader of a user's own files)."""

from __future__ import annotations

# Alpaca's templates (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), byte for byte.
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
# Magicoder's template (ise-uiuc/magicoder, README "Inference").
MAGICODER = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate "
    "and reliable responses to user instructions.\n\n@@ Instruction\n{instruction}\n\n@@ Response\n")


def alpaca_prompt(instruction: str, input: str = "") -> str:
    if input and input.strip():
        return ALPACA_INPUT.format(instruction=instruction, input=input)
    return ALPACA_NO_INPUT.format(instruction=instruction)
