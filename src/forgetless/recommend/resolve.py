"""One answer to "which optimizer do I finetune this checkpoint with?" (issue 23 §3).

`resolve` serves `forgetless recommend`, `create_optimizer(family="auto")` and `forgetless
finetune` without --optimizer, so the three never disagree. In order:
1. a forgetless run config (the optimizer that pretrained it, recorded),
2. the provenance registry (recommend/provenance.json: names, model card, model type),
3. the weight fingerprint's headline: Adam-like (element-wise) -> adamw, Muon-like (spectral) ->
   muon; asked for (`infer`), it also outranks a provenance only assumed from the architecture
   (documented provenance is kept, with a caution when they disagree). The fine family within the group never decides (no public model was pretrained with
   column or row top-1, and the references that tell them apart are short runs).
When none of them knows, or the fingerprint's headline probability is below `min_confidence`
(default fingerprint_model.CONFIDENCE = 0.8), the answer is AdamW, the optimizer of most open
models, and a `warnings.warn` says so (visible in a plain script, not only in a log).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from forgetless.analysis.fingerprint_model import CONFIDENCE, GROUP_LABELS, group_of
from forgetless.optim import OPTIMIZERS, describe, family_members
from forgetless.recommend.provenance import ModelFacts, lookup, model_facts

GROUP_OPTIMIZER = {"adam-like": "adamw", "muon-like": "muon"}  # what a headline group finetunes with
FALLBACK = "adamw"


class PretrainingUnknown(UserWarning):
    """The pretraining optimizer could not be found; forgetless finetunes with AdamW."""

    __module__ = "forgetless.recommend"  # the CLI prints forgetless's own warnings as one line


@dataclass
class Resolution:
    """The optimizer to finetune with, and how it was found."""

    optimizer: str  # a forgetless optimizer name, always set (AdamW when nothing is known)
    pretrain_optimizer: str | None  # None when unknown
    how_known: str  # "provenance", "fingerprint" or "unknown" (then optimizer is the AdamW fallback)
    confidence: float | None  # the fingerprint's headline probability, when it decided
    group: str | None = None  # the fingerprint's headline ("adam-like", "muon-like", "unknown")
    reasoning: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    status: str | None = None  # the provenance's "documented" or "assumed"
    evidence: list[dict] = field(default_factory=list)  # the fingerprint's deciding features

    @property
    def fell_back(self) -> bool:
        return self.how_known == "unknown"

    def summary(self) -> str:
        """One line: "AdamW (the checkpoint's weights look Adam-like, p = 0.97)"."""
        if self.how_known == "fingerprint":
            return (f"{self.optimizer} (the checkpoint's weights look {GROUP_LABELS.get(self.group, self.group)}, "
                    f"p = {self.confidence:.2f})")
        if self.how_known == "provenance":
            return f"{self.optimizer} ({self.status} provenance)"
        return f"{self.optimizer} (pretraining optimizer unknown: the AdamW default)"


def resolve(model: str | Path, facts: ModelFacts | None = None, infer: bool = False, module=None,
            min_confidence: float = CONFIDENCE, warn: bool = True) -> Resolution:
    """The optimizer to finetune `model` with. `facts` replaces what `model_facts(model)` would read
    (a model held in memory); `module`, an nn.Module, is fingerprinted in memory instead of loading
    `model`; `infer` asks the fingerprint even when the provenance is known."""
    facts = facts if facts is not None else model_facts(model)
    found = Resolution(FALLBACK, None, "unknown", None)
    prov = lookup(facts)
    if prov is not None and prov.optimizer in OPTIMIZERS:
        found.optimizer = found.pretrain_optimizer = prov.optimizer
        found.how_known, found.status = "provenance", prov.status
        found.reasoning.append(f"{prov.family} checkpoints were pretrained with {prov.variant} "
                               f"({prov.status}; matched on {prov.matched_on}).")
        found.sources.append(prov.source)
    if infer or found.pretrain_optimizer is None:
        _ask_fingerprint(model, module, found, min_confidence)
    if found.how_known == "unknown" and warn:
        why = found.reasoning[-1] if found.reasoning else "no provenance"
        warnings.warn(f"the pretraining optimizer of {str(model) or 'the model'!r} is unknown ({why.rstrip('.')}); "
                      f"finetuning with {FALLBACK}. Pass an optimizer explicitly to choose another.",
                      PretrainingUnknown, stacklevel=2)
    return found


def _ask_fingerprint(model, module, found: Resolution, min_confidence: float) -> None:
    try:
        from forgetless.analysis.fingerprint import (
            fingerprint,
            fingerprint_checkpoint,
            model_features,
        )

        pred = fingerprint(model_features(module)) if module is not None else fingerprint_checkpoint(str(model))
    except (ImportError, OSError, ValueError, RuntimeError) as err:
        found.reasoning.append(f"The fingerprint could not be computed for this checkpoint: {err}")
        return
    found.group, found.evidence = pred.headline, pred.deciding
    if pred.groups is None:  # out of the references' range, or untrained
        found.reasoning.append("The fingerprint could not tell: " + unknown_reason(pred) + ".")
        return
    best = max(pred.groups, key=pred.groups.get)
    p = pred.groups[best]
    shown = ", ".join(f"{GROUP_LABELS.get(g, g)} {v:.2f}" for g, v in sorted(pred.groups.items(), key=lambda x: -x[1]))
    if pred.headline == "unknown" or p < min_confidence:
        found.reasoning.append(f"The fingerprint could not tell: no group reaches p = {min_confidence:g} ({shown}).")
        found.group = "unknown"
        return
    opt = GROUP_OPTIMIZER.get(best) or family_members(best)[0]
    evidence = "; ".join(f"{d['feature']} = {d['value']:.3g} (" + ", ".join(
        f"{GROUP_LABELS.get(g, g)} {lo:.3g}..{hi:.3g}" for g, (lo, hi) in d["ranges"].items()) + ")"
        for d in pred.deciding)
    found.reasoning.append(
        f"The checkpoint's weights look {GROUP_LABELS.get(best, best)}, p = {p:.2f} with the prior for public "
        f"checkpoints ({pred.groups_without_prior[best]:.2f} without it); evidence: {evidence or 'none listed'}.")
    if pred.fine_family:
        found.reasoning.append(f"Within the group the fine family is {pred.fine_family}; it does not change the advice.")
    found.sources.append("forgetless fingerprint, calibrated on reference checkpoints it pretrains")
    agrees = found.pretrain_optimizer is None or group_of(describe(found.pretrain_optimizer).family) == best
    if found.pretrain_optimizer is None or found.status == "assumed":
        # An architecture alone is a guess (forgetless's own Muon bases are Llama-architecture):
        # asked for (--infer), confident weights outrank it.
        if not agrees:
            found.cautions.append(f"The provenance was only assumed from the architecture ({found.pretrain_optimizer}); "
                                  f"the weights look {GROUP_LABELS.get(best, best)}, so they are followed.")
        found.optimizer = found.pretrain_optimizer = opt
        found.how_known, found.confidence, found.status = "fingerprint", p, None
    elif not agrees:
        found.cautions.append(f"The fingerprint ({GROUP_LABELS.get(best, best)}) disagrees with the provenance "
                              f"({found.pretrain_optimizer}); the provenance is kept.")


def unknown_reason(pred) -> str:
    """Why the fingerprint said "unknown", in words: the feature furthest out of the references'
    range, or the distance to the nearest family when no feature is out of range."""
    worst = max(pred.out_of_range, key=lambda f: f.get("excess_sigma") or math.inf, default=None)
    if worst is not None:
        return (f"the checkpoint is unlike the reference models it was calibrated on ({worst['feature']} = "
                f"{worst['value']:.4g}, outside their range {worst['lo']:.4g}..{worst['hi']:.4g})")
    return (f"the checkpoint is unlike the reference models it was calibrated on (distance "
            f"{pred.distance:.2f} to the nearest family, beyond {pred.unknown_distance:.2f})")
