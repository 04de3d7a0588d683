"""Drop-ins for the trainers people already use (Hugging Face `Trainer`, TRL `SFTTrainer`)."""

from forgetless.integrations.callback import ForgettingCallback, reference_batches
from forgetless.integrations.harness import HarnessCallback, harness_point, harness_scores
from forgetless.integrations.optimizer import create_optimizer, resolve_family

__all__ = ["ForgettingCallback", "HarnessCallback", "create_optimizer", "harness_point",
           "harness_scores", "reference_batches", "resolve_family"]
