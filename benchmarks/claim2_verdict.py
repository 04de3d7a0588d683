"""Claims 1 and 2 on the claim2-2m sweep, as the report computes them, plus the regime check."""
import sys

from forgetless.report.regime import unbracketed_grids
from forgetless.report.tables import finetune_rows, pretrain_rows
from forgetless.report.verdicts import claim1_pretraining, claim2_same_optimizer
from forgetless.sweep.store import Store

with Store(sys.argv[1]) as st:
    ft = finetune_rows(st, "claim2-2m")
    pre = pretrain_rows(st, "claim2-2m")
for v in (claim1_pretraining(pre), claim2_same_optimizer(ft)):
    print(f"claim {v.claim}: {v.status}; effect {v.effect:+.3f} [{v.low:+.3f}, {v.high:+.3f}] over {v.n_units} units")
    print("  ours:", v.ours)
    for d in v.details:
        print("  ", d)
print("unbracketed grids:", unbracketed_grids(ft))
