"""Drop-ins for the trainers people already use (Hugging Face `Trainer`, TRL `SFTTrainer`).

Each name below is imported from its module when first used (forgetless.lazy)."""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "ForgettingCallback": "callback", "reference_batches": "callback",
    "ForgettingBudgetCallback": "budget",
    "HarnessCallback": "harness", "harness_point": "harness", "harness_scores": "harness",
    "OptimizerFactory": "optimizer", "create_optimizer": "optimizer", "optimizer_factory": "optimizer",
    "resolve_family": "optimizer",
    "L2SPCallback": "remedies", "ReplayCollator": "remedies", "wise": "remedies",
    "ForgetlessTrainerMixin": "trainer",
})
