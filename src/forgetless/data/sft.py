"""Supervised finetuning records and the collator that turns them into masked training batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # the label torch's cross_entropy (and HF causal LMs) skip


@dataclass(frozen=True)
class SFTRecord:
    """One finetuning example. `answer` is the checkable final answer where the task has one
    (a number for arithmetic, the exact output for instruct, a JSON test spec for code)."""

    prompt: str
    response: str
    answer: str | None = None


class SFTCollator:
    """records -> {"input_ids", "attention_mask", "labels"} (int64 tensors of shape (B, L)).

    Each example is `prompt + response + EOS`, tokenised in two parts so the boundary is exact
    (the prompt with the tokenizer's own special tokens, e.g. a Llama BOS; the response without),
    then cut to `seq_len` tokens. labels = input_ids except IGNORE_INDEX (-100) on prompt tokens
    and padding, so the loss is the mean over response tokens (EOS included) only. The model
    shifts labels itself (Hugging Face convention): label[t] is predicted from tokens < t.

    packing=False: one example per row, right-padded to the longest row (or to `seq_len` when
        `pad_to_seq_len`).
    packing=True: examples are placed whole into rows of `seq_len` (first fit, in order), so there
        is less padding; tokens of one row attend across example boundaries, as usual in packing.
    """

    def __init__(self, tokenizer, seq_len: int, packing: bool = False,
                 pad_to_seq_len: bool = False) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token first")
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.packing = packing
        self.pad_to_seq_len = pad_to_seq_len
        pad = tokenizer.pad_token_id
        self.pad_id = tokenizer.eos_token_id if pad is None else pad

    def encode(self, records: Sequence[SFTRecord]) -> list[tuple[list[int], list[int]]]:
        """(input ids, labels) of each record, truncated to seq_len, unpadded."""
        if not records:
            raise ValueError("records is empty; give at least one SFTRecord")
        for i, rec in enumerate(records):
            if not isinstance(rec, SFTRecord):
                raise TypeError(f"records[{i}] is {type(rec).__name__}, expected SFTRecord")
        prompts = self.tokenizer([r.prompt for r in records], add_special_tokens=True)["input_ids"]
        responses = self.tokenizer([r.response for r in records],
                                   add_special_tokens=False)["input_ids"]
        out = []
        for p, r in zip(prompts, responses, strict=True):
            ids = (list(p) + list(r) + [self.tokenizer.eos_token_id])[: self.seq_len]
            labels = ([IGNORE_INDEX] * len(p) + list(r) + [self.tokenizer.eos_token_id])
            out.append((ids, labels[: self.seq_len]))
        if all(all(x == IGNORE_INDEX for x in lab) for _, lab in out):
            shortest = min(len(p) for p in prompts)
            raise ValueError(f"seq_len={self.seq_len} leaves no response token in any record (the "
                             f"shortest prompt has {shortest} tokens); raise seq_len")
        return out

    def __call__(self, records: Sequence[SFTRecord]) -> dict[str, torch.Tensor]:
        examples = self.encode(records)
        rows = _pack(examples, self.seq_len) if self.packing else examples
        width = self.seq_len if self.pad_to_seq_len else max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _pack(examples: list[tuple[list[int], list[int]]], seq_len: int):
    """First-fit: each example goes into the first row with room for all of it."""
    rows: list[tuple[list[int], list[int]]] = []
    for ids, lab in examples:
        for row_ids, row_lab in rows:
            if len(row_ids) + len(ids) <= seq_len:
                row_ids.extend(ids)
                row_lab.extend(lab)
                break
        else:
            rows.append((list(ids), list(lab)))
    return rows
