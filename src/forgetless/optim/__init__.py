"""The optimizer family of the paper, each member steepest descent under an operator norm.

    from forgetless.optim import build, describe, same_family
    opt = build(model, "muon", lr=3e-3, weight_decay=0.1)   # hidden matrices: Muon, rest: AdamW

See docs/optim.md for the family table, the routing rules and the mathematics.
"""

from . import lmo
from .build import DEFAULT_ADAMW_PATTERNS, build, route
from .optimizer import SteepestDescent
from .registry import OPTIMIZERS, OptimizerInfo, describe, family_members, same_family

__all__ = [
    "DEFAULT_ADAMW_PATTERNS",
    "OPTIMIZERS",
    "OptimizerInfo",
    "SteepestDescent",
    "build",
    "describe",
    "family_members",
    "lmo",
    "route",
    "same_family",
]
