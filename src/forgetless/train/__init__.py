"""Training: `pretrain` from scratch and `finetune` (full or LoRA) with any forgetless optimizer.

    from forgetless.train import PretrainConfig, pretrain
    result = pretrain(PretrainConfig(model="micro", optimizer="muon", tokens="1.5M", out_dir="runs/muon"))

See docs/training.md.
"""

from forgetless.train.config import FinetuneConfig, PretrainConfig, TrainConfig, parse_count
from forgetless.train.finetune import finetune
from forgetless.train.pretrain import pretrain
from forgetless.train.rundir import RunResult

__all__ = ["FinetuneConfig", "PretrainConfig", "RunResult", "TrainConfig", "finetune", "parse_count", "pretrain"]
