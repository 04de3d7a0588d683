"""Supervised finetuning records and the collator that turns them into masked training batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # the label torch's cross_entropy (and HF causal LMs) skip


@dataclass(frozen=True)
class SFTRecord:
    """One finetuning example. `answer` is the checkable final answer where the task has one
    (a number for arithmetic, the exact output for instruct, a JSON test spec for code).

    `messages`, when set, is the example as a conversation of (role, content) pairs ending with an
    assistant turn (a user's chat, prompt/completion or Alpaca data). A tokenizer with a chat
    template renders it and the loss falls on the assistant turns; `prompt` and `response` are its
    plain rendering, used by tokenizers without a template."""

    prompt: str
    response: str
    answer: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None


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
    chat_template (None: when the tokenizer has one): a record with `messages` is rendered by the
        tokenizer's chat template instead, tokenised whole (its special tokens come from the
        template), and labelled on the tokens each assistant turn adds to the rendering (its
        content and end-of-turn text); no EOS is appended, the template ends the turn.
    """

    def __init__(self, tokenizer, seq_len: int, packing: bool = False,
                 pad_to_seq_len: bool = False, chat_template: bool | None = None) -> None:
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
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise ValueError("chat_template=True but the tokenizer has no chat_template; set "
                             "tokenizer.chat_template or leave chat_template=None")
        self.chat = has_template if chat_template is None else chat_template
        self._chat_cache: dict[tuple, tuple[list[int], list[int]]] = {}

    def encode(self, records: Sequence[SFTRecord]) -> list[tuple[list[int], list[int]]]:
        """(input ids, labels) of each record, truncated to seq_len, unpadded."""
        if not records:
            raise ValueError("records is empty; give at least one SFTRecord")
        for i, rec in enumerate(records):
            if not isinstance(rec, SFTRecord):
                raise TypeError(f"records[{i}] is {type(rec).__name__}, expected SFTRecord")
        full: list[tuple[list[int], list[int]] | None] = [
            self._chat(r.messages) if self.chat and r.messages else None for r in records]
        plain = [r for r, f in zip(records, full, strict=True) if f is None]
        if plain:  # one batched call for the records without a template
            prompts = self.tokenizer([r.prompt for r in plain], add_special_tokens=True)["input_ids"]
            responses = self.tokenizer([r.response for r in plain],
                                       add_special_tokens=False)["input_ids"]
            eos = self.tokenizer.eos_token_id
            it = iter(zip(prompts, responses, strict=True))
            for i, f in enumerate(full):
                if f is None:
                    p, r = next(it)
                    full[i] = (list(p) + list(r) + [eos], [IGNORE_INDEX] * len(p) + list(r) + [eos])
        out = [(ids[: self.seq_len], labels[: self.seq_len]) for ids, labels in full]
        if all(all(x == IGNORE_INDEX for x in lab) for _, lab in out):
            shortest = min(next((j for j, x in enumerate(lab) if x != IGNORE_INDEX), len(lab))
                           for _, lab in full)
            raise ValueError(f"seq_len={self.seq_len} leaves no response token in any record (the "
                             f"shortest prompt has {shortest} tokens); raise seq_len")
        return out

    def _chat(self, messages: tuple[tuple[str, str], ...]) -> tuple[list[int], list[int]]:
        """(ids, labels) of a conversation through the chat template, cached per conversation
        (training revisits every record each epoch, and rendering Jinja is the slow part)."""
        if messages not in self._chat_cache:
            self._chat_cache[messages] = chat_example(self.tokenizer, messages)
        return self._chat_cache[messages]


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


def chat_example(tokenizer, messages: tuple[tuple[str, str], ...]) -> tuple[list[int], list[int]]:
    """Render `messages` with the tokenizer's chat template; labels are the ids of the tokens that
    start inside an assistant turn's part of the text, IGNORE_INDEX elsewhere.

    A turn's part is what it adds to the rendering: from the end of the conversation before it
    with the generation prompt (e.g. "<|im_start|>assistant\\n") to the end of the conversation
    through it. Templates render a conversation as growing prefixes; where one does not for an
    earlier turn (templates that rewrite past replies), only the later replies are learned, and a
    template that does not even for the last reply is an error: no exact boundary exists then.
    """
    def render(upto: int, generation_prompt: bool) -> str:
        msgs = [{"role": role, "content": content} for role, content in messages[:upto]]
        try:
            return tokenizer.apply_chat_template(msgs, tokenize=False,
                                                 add_generation_prompt=generation_prompt)
        except Exception as err:  # Jinja raises its own types, e.g. "roles must alternate"
            roles = [m["role"] for m in msgs]
            raise ValueError(f"the tokenizer's chat template failed on a conversation with roles "
                             f"{roles}: {type(err).__name__}: {err}") from err

    text = render(len(messages), False)
    spans = []
    for i in [i for i, (role, _) in enumerate(messages) if role == "assistant"][::-1]:
        start, end = render(i, True), render(i + 1, False)
        if not (text.startswith(end) and end.startswith(start)):
            if spans:  # e.g. Qwen3 drops earlier turns' reasoning: learn the last reply alone
                break
            raise ValueError("the tokenizer's chat template does not render a conversation as "
                             "growing prefixes (turn by turn), so the assistant tokens cannot be "
                             "told apart; use a tokenizer without a template (chat_template=False)")
        spans.append((len(start), len(end)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [tok if any(a <= s < b for a, b in spans) else IGNORE_INDEX
              for tok, (s, _) in zip(ids, enc["offset_mapping"], strict=True)]
    return ids, labels


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
