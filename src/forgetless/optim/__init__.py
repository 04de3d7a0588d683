"""The optimizer family of the paper, each member steepest descent under an operator norm.

    from forgetless.optim import build, describe, same_family
    opt = build(model, "muon", lr=3e-3, weight_decay=0.1)   # hidden matrices: Muon, rest: AdamW

A new rule is one `register(name, p, q, lmo_fn, ...)` call (see `registry`); `functional` holds
the update every rule shares. See docs/optim.md for the family table, the routing rules and the
mathematics.

Each name below is imported from its module when first used (forgetless.lazy), so importing the
package, or `forgetless.optim.names` (the names a config validates), costs no torch.
"""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "DEFAULT_ADAMW_PATTERNS": "build", "build": "build", "route": "build",
    "SteepestDescent": "optimizer",
    "ENTRYWISE": "registry", "FROBENIUS": "registry", "OPTIMIZERS": "registry", "WHOLE": "registry",
    "OptimizerInfo": "registry", "describe": "registry", "family_members": "registry",
    "register": "registry", "same_family": "registry", "unregister": "registry",
}, modules=("functional", "lmo"))
