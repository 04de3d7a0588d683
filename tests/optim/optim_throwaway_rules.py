"""Two throwaway rules, each added to the family by one `register` call and nothing else.

The tests use them to show that a new rule needs no edit anywhere in forgetless: it steps in one
process (test_optim_new_rule.py) and on FSDP2 shards and DDP replicas (test_sharded_optim.py).
"""

import torch

from forgetless.optim import OPTIMIZERS, WHOLE, register, unregister

ENTRYWISE_RULE, WHOLE_RULE = "scaledsign", "top1entry"


def scaled_sign(m: torch.Tensor, sign_scale: float = 0.5) -> torch.Tensor:
    """sign_scale * sign(M): entry by entry, so it runs on each rank's shard as it is."""
    return sign_scale * torch.sign(m)


def top1_entry(m: torch.Tensor) -> torch.Tensor:
    """lmo of the entry-wise l1 norm (sum |D_ij| <= 1): sign(M) on the entries of largest |M| in
    the whole matrix (k ties share 1), so it needs whole matrices."""
    mag = m.abs()
    top = mag == mag.amax(dim=(-2, -1), keepdim=True)
    return torch.sign(m) * top / top.sum(dim=(-2, -1), keepdim=True)


def register_throwaway() -> list[str]:
    """Add both rules (once); returns their names."""
    if ENTRYWISE_RULE not in OPTIMIZERS:
        register(ENTRYWISE_RULE, "1", "inf", scaled_sign, element_wise=True,
                 lmo_options=("sign_scale",), defaults={"sign_scale": 0.5},
                 norm="largest absolute entry", lmo="sign_scale * sign(M)")
    if WHOLE_RULE not in OPTIMIZERS:
        register(WHOLE_RULE, "entry-l1", "entry-l1", top1_entry, on_shards=WHOLE,
                 norm="sum of absolute entries (not an operator norm)",
                 lmo="sign(M) on the largest |M| of the whole matrix")
    return [ENTRYWISE_RULE, WHOLE_RULE]


def unregister_throwaway() -> None:
    for name in (ENTRYWISE_RULE, WHOLE_RULE):
        if name in OPTIMIZERS:
            unregister(name)
