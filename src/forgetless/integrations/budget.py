"""`ForgettingBudgetCallback`: a forgetting budget inside any Hugging Face `Trainer` run.

    forgetting = ForgettingCallback(reference_texts, tokenizer, every=None)   # with each evaluation
    budget = ForgettingBudgetCallback(0.1, patience=2)                        # or "5%"
    trainer = Trainer(..., eval_dataset=task_eval, eval_strategy="steps", eval_steps=50)
    forgetting.attach(trainer); budget.attach(trainer)
    trainer.train()       # stops when forgetting has left the budget; the model ends as the best within
    budget.kept           # {"step": 150, "learning": 1.83, "forgetting": 3.47, "changes": {...}, ...}

The decisions are `forgetless finetune --forgetting-budget`'s (forgetless.train.budget): at each
evaluation, forgetting is `ForgettingCallback`'s measurement at that step (its total and each
source of a dict reference, against its step-0 measurement, the base model's) and learning is the
evaluation's `eval_loss` (lower is better; `learning=` names another metric). The evaluation with
the lowest learning within the budget is kept: its trainable weights in memory (a CPU copy, loaded
back at the end of training) and on disk as `<output_dir>/best-within-budget/`, written by the
Trainer's own `save_model` when attached (else `save_pretrained`). `patience` evaluations in a row
outside the budget stop training (`control.should_training_stop`, as EarlyStoppingCallback does),
and `stopped` says why. Each evaluation also logs `eval_forgetting_within_budget` (1 or 0), which
reaches the report_to trackers when the callback is attached.

When no evaluation was within the budget the model is left as trained and a warning says so;
`forgetless.integrations.wise(base, model, α)` blends it back towards the base (forgetless
finetune's own rollback bisects α on the reference for you).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from forgetless.integrations.callback import PREFIX, TrackedCallback
from forgetless.train import remedies
from forgetless.train.budget import KEPT, BudgetTracker
from forgetless.train.config import parse_forgetting_budget

log = logging.getLogger(__name__)


class ForgettingBudgetCallback(TrackedCallback):
    """Stop a Trainer when forgetting has left `budget` for `patience` evaluations in a row, and
    end with the weights of the evaluation that learned most within it (see the module docstring)."""

    def __init__(self, budget: float | str, patience: int = 2, learning: str = "eval_loss",
                 save_dir: str | Path | None = None):
        self.budget = parse_forgetting_budget(budget)
        if self.budget is None:
            raise ValueError("forgetting_budget: give a budget (0.1 nats, or a share such as '5%')")
        self.patience, self.learning, self.save_dir = patience, learning, save_dir
        self.tracker = BudgetTracker(self.budget, patience)  # checks the patience
        self._kept_state = None
        self._seen: set[int] = set()

    @property
    def kept(self) -> dict | None:
        """The kept evaluation: step, learning, forgetting, change per source."""
        return self.tracker.kept

    @property
    def stopped(self) -> str | None:
        """Why training stopped early, or None."""
        return self.tracker.stopped

    @staticmethod
    def _point(record: dict) -> dict:
        """A ForgettingCallback log record as an eval point (total and per-source losses)."""
        sources = {k[len(PREFIX) + 6:]: v for k, v in record.items() if k.startswith(f"{PREFIX}_loss_")}
        return {"step": record["step"], "forgetting": record[f"{PREFIX}_loss"], "forgetting_by_source": sources}

    def on_train_begin(self, args, state, control, **kwargs):
        if self.save_dir is None:
            self.save_dir = Path(args.output_dir) / KEPT

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        step = state.global_step
        if step in self._seen:
            return
        records = [r for r in state.log_history if f"{PREFIX}_loss" in r]
        here = [r for r in records if r["step"] == step]
        if not here:
            log.warning("forgetless: ForgettingBudgetCallback found no forgetting measured at step %d; use "
                        "ForgettingCallback(every=None) (it measures with each evaluation)", step)
            return
        learning = (metrics or {}).get(self.learning)
        if learning is None:
            raise ValueError(f"learning: the evaluation gave no {self.learning!r} (it gave "
                             f"{sorted(metrics or {})}); pass learning= one of them, or give the Trainer an eval_dataset")
        self._seen.add(step)
        if self.tracker.base is None:  # the first measurement is the base model's (step 0)
            self.tracker.observe(self._point(records[0]))
        decision = self.tracker.observe({**self._point(here[-1]), "learning": float(learning)})
        if decision.keep:
            self._kept_state = remedies.anchor_of(model, "cpu")
            self._save(model, processing_class, state)
        self._emit(args, state, control, {f"{PREFIX}_within_budget": float(not self.tracker.last["outside"])})
        if decision.stop:
            control.should_training_stop = True
            log.warning("forgetless: stopping at step %d: %s", step, decision.stop)

    def _save(self, model, processing_class, state) -> None:
        """best-within-budget/ by the Trainer's own writer, through a temporary name."""
        final = Path(self.save_dir)
        tmp = final.with_name(f".{final.name}.tmp")
        if self.trainer is not None:
            self.trainer.save_model(str(tmp))
        elif state.is_world_process_zero:
            model.save_pretrained(tmp)
            if processing_class is not None:
                processing_class.save_pretrained(tmp)
        if state.is_world_process_zero and tmp.exists():
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._kept_state is not None:
            remedies.load_trainable(model, self._kept_state)
            kept = self.tracker.kept
            log.warning("forgetless: the model now holds step %d, the best within the forgetting budget "
                        "(learning %.4f, forgetting change %+.4f); saved in %s", kept["step"], kept["learning"],
                        kept["forgetting_delta"], self.save_dir)
        elif self.tracker.last is not None:
            log.warning("forgetless: no evaluation was within the forgetting budget; the model is left as "
                        "trained (forgetless.integrations.wise(base, model, alpha) blends it back)")
