"""Forgetting remedies for Hugging Face `Trainer` users: replay, L2-SP and WiSE-FT.

    from forgetless.integrations import L2SPCallback, ReplayCollator, wise

    collator = ReplayCollator(DataCollatorForLanguageModeling(tok, mlm=False), replay_texts, tok,
                              fraction=0.01)          # 1% of each batch's rows: pretraining-like text
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                      callbacks=[L2SPCallback(coef=0.01)])   # pull towards the weights at train start
    trainer.train()
    for alpha in (0.25, 0.5, 0.75):
        blended = wise(base_model, model, alpha)     # (1 − α)·base + α·finetuned, a new model

The replay text must not be the text that measures forgetting (e.g. `ForgettingCallback`'s
reference): replaying the measured text would make forgetting look smaller than it is. The
mechanics, and their exact counts, are those of `forgetless finetune` (forgetless.train.remedies).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from transformers import TrainerCallback

from forgetless.train import remedies


class ReplayCollator:
    """Wraps a collator: the last n_j rows of batch j become windows of the replay text, n_j as in
    forgetless.train.remedies.replay_count (so ⌊J·r·B⌋ rows over J batches of B rows). A replay row
    is a window as wide as the batch: input_ids, attention_mask 1 and labels = input_ids (every
    position a target). Counts: `sequences` and `tokens` replayed so far.

    Batches are numbered in the order the collator is called: use `dataloader_num_workers=0`
    (worker processes would each keep their own count)."""

    def __init__(self, collator: Callable, replay: Sequence[str] | np.ndarray, tokenizer=None,
                 fraction: float = 0.01, seed: int = 0, label_pad: int = -100):
        if isinstance(replay, np.ndarray) or (len(replay) and not isinstance(replay[0], str)):
            ids = np.asarray(replay, dtype=np.int64)
        else:
            if tokenizer is None:
                raise ValueError("ReplayCollator: replay texts need the tokenizer (tokenizer=...)")
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            ids = np.asarray([t for text in replay for t in tokenizer(text, add_special_tokens=False)["input_ids"] + eos],
                             dtype=np.int64)
        self.collator, self.fraction, self.seed, self.label_pad = collator, fraction, seed, label_pad
        self.tokens = ids
        self.index = self.sequences = self.replayed_tokens = 0
        remedies.Replay(ids, fraction, 1)  # checks the fraction

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        batch = dict(self.collator(features))
        ids = batch["input_ids"]
        rows, width = ids.shape
        mixer = remedies.Replay(self.tokens, self.fraction, rows, self.seed)
        n = min(remedies.replay_count(self.fraction, rows, self.index), rows)
        self.index += 1
        if n == 0:
            return batch
        if width + 1 > len(self.tokens):
            raise ValueError(f"ReplayCollator: {len(self.tokens)} replay tokens cannot fill a window of "
                             f"{width}; give more replay text")
        (x, _), _ = mixer((ids, ids), self.index - 1)
        batch["input_ids"] = x
        if "attention_mask" in batch:
            batch["attention_mask"] = torch.cat([batch["attention_mask"][: rows - n],
                                                 torch.ones(n, width, dtype=batch["attention_mask"].dtype)])
        if "labels" in batch:
            batch["labels"] = torch.cat([batch["labels"][: rows - n], x[rows - n:].to(batch["labels"].dtype)])
        self.sequences += n
        self.replayed_tokens += n * width
        return batch


class L2SPCallback(TrainerCallback):
    """L2-SP (Li et al. 2018): adds coef·(θ − θ₀) to each trainable parameter's gradient before every
    optimizer step, θ₀ the weights when training begins (or `anchor`, a name → tensor mapping of the
    trainable parameters). The Trainer calls it after gradient clipping, so unlike `forgetless
    finetune` (which adds it before) the pull itself is not clipped. θ₀ doubles trainable-parameter
    memory."""

    def __init__(self, coef: float, anchor: Mapping[str, torch.Tensor] | None = None):
        if coef < 0:
            raise ValueError(f"L2SPCallback: coef must be >= 0; got {coef}")
        self.coef, self.anchor, self.pull = coef, anchor, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        anchor = self.anchor if self.anchor is not None else remedies.anchor_of(model)
        self.pull = remedies.L2SP(model, self.coef, anchor)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.pull is not None and self.coef > 0:
            self.pull.add_gradient()

    def penalty(self) -> float:
        """(coef/2)·Σ‖θ − θ₀‖² now."""
        return self.pull.penalty() if self.pull is not None else 0.0


def _state(m: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(m) if isinstance(m, Mapping) else dict(m.state_dict())


def wise(base: torch.nn.Module | Mapping[str, torch.Tensor], finetuned: torch.nn.Module,
         alpha: float, into: torch.nn.Module | None = None) -> torch.nn.Module:
    """WiSE-FT (Wortsman et al. 2022): a model with weights (1 − α)·base + α·finetuned, every
    floating tensor of the state dicts (α = 0 and 1 copy one side bit for bit). A copy of
    `finetuned`, or `into` loaded in place. A PEFT model: merge it first (merge_and_unload)."""
    state = remedies.interpolate(_state(base), _state(finetuned), alpha)
    model = into if into is not None else copy.deepcopy(finetuned)
    model.load_state_dict(state)
    return model
