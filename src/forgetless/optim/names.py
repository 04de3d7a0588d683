"""The optimizer names, without torch: what a config validates and `--help` lists before anything
trains. `OPTIMIZER_NAMES` reads the registry (`registry.OPTIMIZERS`) once that is imported, so a
rule registered at run time is accepted; until then, this fixed list of the registry's members."""

from forgetless.lazy import Names

OPTIMIZER_NAMES = Names("forgetless.optim.registry:OPTIMIZERS", (
    "adamw", "signsgd", "lion", "muon", "coltop1", "rowtop1", "colnorm", "rownorm", "sgd",
))
