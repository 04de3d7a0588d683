"""The optimizer family of the paper, each member steepest descent under an operator norm.

    from forgetless.optim import build, describe, same_family
    opt = build(model, "muon", lr=3e-3, weight_decay=0.1)   # hidden matrices: Muon, rest: AdamW

A new rule is one `register(name, p, q, lmo_fn, ...)` call (see `registry`); `functional` holds
the update every rule shares. See docs/optim.md for the family table, the routing rules and the
mathematics.
"""

from . import functional, lmo
from .build import DEFAULT_ADAMW_PATTERNS, build, route
from .optimizer import SteepestDescent
from .registry import (
    ENTRYWISE,
    FROBENIUS,
    OPTIMIZERS,
    WHOLE,
    OptimizerInfo,
    describe,
    family_members,
    register,
    same_family,
    unregister,
)

__all__ = [
    "DEFAULT_ADAMW_PATTERNS",
    "ENTRYWISE",
    "FROBENIUS",
    "OPTIMIZERS",
    "OptimizerInfo",
    "SteepestDescent",
    "WHOLE",
    "build",
    "describe",
    "family_members",
    "functional",
    "lmo",
    "register",
    "route",
    "same_family",
    "unregister",
]
