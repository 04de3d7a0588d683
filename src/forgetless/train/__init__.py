"""Training: `pretrain` from scratch and `finetune` (full or LoRA) with any forgetless optimizer.

    from forgetless.train import PretrainConfig, pretrain
    result = pretrain(PretrainConfig(model="micro", optimizer="muon", tokens="1.5M", out_dir="runs/muon"))

See docs/training.md. Each name below is imported from its module when first used
(forgetless.lazy): the configs cost no torch (`forgetless finetune --help` builds its options from
them); `pretrain` and `finetune` load the training loop.
"""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "FinetuneConfig": "config", "PretrainConfig": "config", "TrainConfig": "config", "parse_count": "config",
    "finetune": "finetune", "pretrain": "pretrain", "RunResult": "rundir",
})
