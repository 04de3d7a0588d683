"""`ForgetlessTrainerMixin`: a Trainer (or TRL trainer) that builds the forgetless optimizer at
train time, after any PEFT wrapping, and attaches every `ForgettingCallback` and `HarnessCallback`
it was given (so their metrics reach the report_to trackers).

    from trl import SFTTrainer
    class ForgetlessSFTTrainer(ForgetlessTrainerMixin, SFTTrainer):
        pass

    trainer = ForgetlessSFTTrainer(model=model, args=args, train_dataset=ds,
                                   peft_config=LoraConfig(...), callbacks=[ForgettingCallback(...)])

The optimizer takes `args.learning_rate` and `args.weight_decay`; the family is resolved as
`forgetless recommend` does ("auto"), or given with `forgetless_family=`. `optimizers=` or
`optimizer_cls_and_kwargs=`, when passed, win as usual.
"""

from __future__ import annotations

from forgetless.integrations.callback import TrackedCallback
from forgetless.integrations.optimizer import create_optimizer


class ForgetlessTrainerMixin:
    """Mix in before the Trainer class: `class T(ForgetlessTrainerMixin, Trainer)`."""

    forgetless_family: str = "auto"

    def __init__(self, *args, forgetless_family: str | None = None, **kwargs):
        if forgetless_family is not None:
            self.forgetless_family = forgetless_family
        super().__init__(*args, **kwargs)
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, TrackedCallback):
                cb.attach(self)

    def create_optimizer(self, model=None):
        if self.optimizer is None and getattr(self, "optimizer_cls_and_kwargs", None) is None:
            # self.model is the PEFT-wrapped model by now: only the adapters require grad.
            self.optimizer = create_optimizer(model if model is not None else self.model,
                                              self.forgetless_family, lr=self.args.learning_rate,
                                              weight_decay=self.args.weight_decay)
            return self.optimizer
        return super().create_optimizer(model)
