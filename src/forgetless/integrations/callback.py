"""`ForgettingCallback`: measure forgetting inside any Hugging Face `Trainer` (or TRL) run.

    cb = ForgettingCallback(reference_texts, tokenizer, every=50)
    trainer = Trainer(..., callbacks=[cb])
    cb.attach(trainer)          # so the metric reaches report_to trackers (or ForgetlessTrainerMixin)
    trainer.train()
    cb.history  # [{"step": 0, "forgetting": 3.91, "delta": 0.0}, {"step": 50, ...}, ...]

Forgetting is the token-weighted mean loss on a fixed reference sample of pretraining-like text,
the same measure `forgetless finetune` uses. The sample is tokenised and cut into windows once, so
every measurement sees the same tokens; it is taken before the first step (the base model's loss)
and every `every` steps (or, with `every=None`, whenever the Trainer evaluates). On
`trainer.train(resume_from_checkpoint=...)` the earlier measurements, the base model's first, are
read back from the checkpoint's `trainer_state.json` (its `log_history`), so the delta stays the
change from the base model, not from the resumed one.

Where the numbers go. Each measurement is one log record of the Trainer at its step:
`eval_forgetting_loss`, `eval_forgetting_delta` (the change from the base model's loss, in nats)
and, when `reference` is a dict of named sources, `eval_forgetting_loss_<source>`. Trackers rewrite
`eval_x` as `eval/x`, so they sit beside `eval/loss`. The Trainer's reporting callbacks (TensorBoard,
W&B, MLflow, ...) run before any callback passed in `callbacks=`, so a callback cannot add to a log
line they have already written; an attached callback instead calls `trainer.log` itself, which
every `report_to` tracker, `state.log_history` and the console receive. Unattached (only
`callbacks=[cb]`), the values go to `cb.history` and `state.log_history` but to no tracker, and a
warning says so when `report_to` names one.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from forgetless.train.evaluate import mean_loss

log = logging.getLogger(__name__)
PREFIX = "eval_forgetting"


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


class TrackedCallback(TrainerCallback):
    """A callback whose measurements reach the Trainer's report_to trackers: `attach(trainer)`
    (or ForgetlessTrainerMixin) routes them through `trainer.log` (see the module docstring)."""

    trainer = None
    _warned = False

    def attach(self, trainer):
        """Route measurements through `trainer.log`, so every report_to tracker receives them; adds
        the callback to `trainer` when it is not there yet. Returns `trainer`."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return trainer

    def _emit(self, args, state, control, metrics: dict[str, float]) -> None:
        if self.trainer is not None:
            # trainer.log sends the record to every callback's on_log (trackers included), but the
            # handler clears control.should_log on the way: keep the Trainer's own decision.
            # Trainer.log itself, not a subclass's: TRL's log() would fold its pending training
            # metrics into this record and clear them from the training line.
            should_log = control.should_log
            Trainer.log(self.trainer, dict(metrics))
            control.should_log = self.trainer.control.should_log = should_log
            return
        state.log_history.append({**metrics, "step": state.global_step})
        trackers = [r for r in (args.report_to or []) if r != "none"]
        if trackers and not self._warned:
            self._warned = True
            name = type(self).__name__
            log.warning("forgetless: %s is not attached to the Trainer, so its metrics reach "
                        "state.log_history but not the report_to trackers %s; call "
                        "cb.attach(trainer) before train(), or use ForgetlessTrainerMixin.", name,
                        trackers)


class ForgettingCallback(TrackedCallback):
    """Log the loss on a fixed reference sample at step 0 and every `every` steps.

    `reference`: a string, a list of strings, a `datasets.Dataset` (its `text_column`), or a dict
    {source name: any of those} for per-source parts beside the total."""

    def __init__(self, reference, tokenizer=None, every: int | None = 50, seq_len: int = 256,
                 batch_size: int = 8, max_tokens: int = 65536, text_column: str = "text"):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be an integer >= 1 or None (with each evaluation), got {every!r}")
        self.reference, self.tokenizer, self.every = reference, tokenizer, every
        self.seq_len, self.batch_size, self.max_tokens = seq_len, batch_size, max_tokens
        self.text_column = text_column
        self.batches: dict[str, list] | None = None  # per source; "" for a single reference
        self.history: list[dict] = []

    def _texts(self, ref) -> list[str]:
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
        tok = getattr(tok, "tokenizer", tok)  # a processor wraps its tokenizer
        sources = self.reference if isinstance(self.reference, dict) else {"": self.reference}
        sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
        self.batches = {}
        for name, ref in sources.items():
            ids: list[int] = []
            for text in self._texts(ref):
                ids += tok(text, add_special_tokens=False)["input_ids"] + sep
                if len(ids) > self.max_tokens:
                    break
            self.batches[name] = reference_batches(ids, self.seq_len, self.batch_size, self.max_tokens)

    def _measure(self, model, step: int) -> dict[str, float]:
        """The metrics of one measurement (also appended to `history`)."""
        device = next(model.parameters()).device
        parts, sums, count = {}, 0.0, 0
        for name, batches in self.batches.items():
            n = sum(y.numel() for _, y in batches)  # reference windows have no ignored positions
            parts[name] = mean_loss(model, batches, device)
            sums, count = sums + parts[name] * n, count + n
        total = sums / count
        base = self.history[0]["forgetting"] if self.history else total
        entry = {"step": step, "forgetting": total, "delta": total - base}
        metrics = {f"{PREFIX}_loss": total, f"{PREFIX}_delta": total - base}
        if isinstance(self.reference, dict):
            entry["by_source"] = dict(parts)
            metrics.update({f"{PREFIX}_loss_{name}": v for name, v in parts.items()})
        self.history.append(entry)
        return metrics

    def _restore(self, state) -> None:
        """On a resume, the measurements the checkpoint's trainer_state.json holds (every one is a
        log record, attached or not): the first is the base model's loss, measured once before the
        first step. The resumed model's loss is not the base's, so it must not replace it."""
        for record in state.log_history:
            if f"{PREFIX}_loss" not in record:
                continue
            entry = {"step": record["step"], "forgetting": record[f"{PREFIX}_loss"],
                     "delta": record.get(f"{PREFIX}_delta", 0.0)}
            if isinstance(self.reference, dict):
                entry["by_source"] = {name: record[f"{PREFIX}_loss_{name}"] for name in self.reference
                                      if f"{PREFIX}_loss_{name}" in record}
            self.history.append(entry)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.batches is None:
            self._prepare(processing_class or kwargs.get("tokenizer"))
        if not self.history and state.global_step > 0:  # resumed from a checkpoint
            self._restore(state)
            if not self.history:
                log.warning("forgetless: the checkpoint at step %d holds no base forgetting loss (it "
                            "was trained without ForgettingCallback); the delta is measured from the "
                            "resumed model, not the base model.", state.global_step)
        if not self.history:
            self._emit(args, state, control, self._measure(model, state.global_step))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        due = (state.global_step % self.every == 0) if self.every else control.should_evaluate
        if due and self.history and self.history[-1]["step"] != state.global_step:
            self._emit(args, state, control, self._measure(model, state.global_step))
