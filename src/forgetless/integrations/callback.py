"""`ForgettingCallback`: measure forgetting inside any Hugging Face `Trainer` run.

    cb = ForgettingCallback(reference_texts, tokenizer, every=50)
    Trainer(..., callbacks=[cb]).train()
    cb.history  # [{"step": 0, "forgetting": 3.91}, {"step": 50, ...}, ...]

Forgetting is the token-weighted mean loss on a fixed reference sample of pretraining-like text,
the same measure `forgetless finetune` uses. The sample is tokenised and cut into windows once, so
every measurement sees the same tokens; it is taken before the first step (the base model's loss)
and every `every` steps, logged as `forgetting_loss` beside the Trainer's own metrics (TensorBoard,
W&B and the rest receive it like any logged value).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import TrainerCallback

from forgetless.train.evaluate import mean_loss


def reference_batches(token_ids: list[int] | np.ndarray, seq_len: int, batch_size: int,
                      max_tokens: int | None = None):
    """Consecutive non-overlapping windows of the token stream, as (inputs, next-token targets)."""
    ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))
    if max_tokens is not None:
        ids = ids[: max_tokens + 1]
    n = (len(ids) - 1) // seq_len
    if n == 0:
        raise ValueError(f"reference text: {len(ids)} tokens is fewer than seq_len + 1 = {seq_len + 1}; "
                         "give more text or a smaller seq_len")
    x = ids[: n * seq_len].view(n, seq_len)
    y = ids[1 : n * seq_len + 1].view(n, seq_len)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


class ForgettingCallback(TrainerCallback):
    """Log the loss on a fixed reference sample every `every` steps (and at step 0)."""

    def __init__(self, reference, tokenizer=None, every: int = 50, seq_len: int = 256,
                 batch_size: int = 8, max_tokens: int = 65536, text_column: str = "text"):
        if every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.reference, self.tokenizer, self.every = reference, tokenizer, every
        self.seq_len, self.batch_size, self.max_tokens = seq_len, batch_size, max_tokens
        self.text_column = text_column
        self.batches = None
        self.history: list[dict] = []

    def _texts(self) -> list[str]:
        ref = self.reference
        if isinstance(ref, str):
            return [ref]
        if hasattr(ref, "column_names"):  # a datasets.Dataset
            if self.text_column not in ref.column_names:
                raise ValueError(f"text_column: {self.text_column!r} is not a column of the reference "
                                 f"dataset; its columns are {ref.column_names}")
            return list(ref[self.text_column])
        return [str(t) for t in ref]

    def _prepare(self, tokenizer) -> None:
        tok = self.tokenizer or tokenizer
        if tok is None:
            raise ValueError("tokenizer: ForgettingCallback needs a tokenizer (pass one, or give the "
                             "Trainer processing_class=tokenizer)")
        ids: list[int] = []
        sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
        for text in self._texts():
            ids += tok(text, add_special_tokens=False)["input_ids"] + sep
            if len(ids) > self.max_tokens:
                break
        self.batches = reference_batches(ids, self.seq_len, self.batch_size, self.max_tokens)

    def _measure(self, model, step: int) -> float:
        device = next(model.parameters()).device
        value = mean_loss(model, self.batches, device)
        self.history.append({"step": step, "forgetting": value})
        return value

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.batches is None:
            self._prepare(processing_class or kwargs.get("tokenizer"))
        if not self.history:
            value = self._measure(model, state.global_step)
            state.log_history.append({"forgetting_loss": value, "step": state.global_step})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._measure(model, state.global_step)
            control.should_log = True  # the value goes out with this step's log line

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Attach the latest measurement, once, to the log record of its step.
        if logs is not None and self.history and self.history[-1]["step"] == state.global_step:
            if "forgetting_loss" not in logs and not self.history[-1].get("logged"):
                logs["forgetting_loss"] = self.history[-1]["forgetting"]
                self.history[-1]["logged"] = True
                if state.log_history and state.log_history[-1].get("step") == state.global_step:
                    state.log_history[-1]["forgetting_loss"] = self.history[-1]["forgetting"]
