"""Advice for practitioners: which optimizer pretrained a checkpoint, and how to finetune it.

Each name below is imported from its module when first used (forgetless.lazy)."""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "TASK_KINDS": "advise", "Recommendation": "advise", "recommend": "advise",
    "Provenance": "provenance", "lookup": "provenance", "model_facts": "provenance",
})
