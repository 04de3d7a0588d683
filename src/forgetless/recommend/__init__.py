"""Advice for practitioners: which optimizer pretrained a checkpoint, and how to finetune it."""

from forgetless.recommend.advise import TASK_KINDS, Recommendation, recommend
from forgetless.recommend.provenance import Provenance, lookup, model_facts

__all__ = ["TASK_KINDS", "Provenance", "Recommendation", "lookup", "model_facts", "recommend"]
