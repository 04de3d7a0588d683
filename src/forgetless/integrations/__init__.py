"""Drop-ins for the trainers people already use (Hugging Face `Trainer`, TRL `SFTTrainer`)."""

from forgetless.integrations.callback import ForgettingCallback, reference_batches
from forgetless.integrations.harness import HarnessCallback, harness_point, harness_scores
from forgetless.integrations.optimizer import (
    OptimizerFactory,
    create_optimizer,
    optimizer_factory,
    resolve_family,
)
from forgetless.integrations.remedies import L2SPCallback, ReplayCollator, wise
from forgetless.integrations.trainer import ForgetlessTrainerMixin

__all__ = ["ForgetlessTrainerMixin", "ForgettingCallback", "HarnessCallback", "L2SPCallback", "OptimizerFactory",
           "ReplayCollator", "create_optimizer", "harness_point", "harness_scores", "optimizer_factory",
           "reference_batches", "resolve_family", "wise"]
