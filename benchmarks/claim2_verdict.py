"""Claims 1-3 on a sweep store, as the report computes them, plus the regime check.

    .venv/bin/python benchmarks/claim2_verdict.py STORE [STUDY]     (STUDY default: claim2-2m)

Prints each claim's verdict line and, under it, its per-base parts and the shown consistency and
main effects with their intervals (the report's verdict table), then every detail line.
"""
import sys

from forgetless.report.document import verdict_lines
from forgetless.report.regime import unbracketed_grids
from forgetless.report.tables import finetune_rows, pretrain_rows
from forgetless.report.verdicts import claim1_pretraining, claim2_same_optimizer, claim3_lora
from forgetless.sweep.store import Store

study = sys.argv[2] if len(sys.argv) > 2 else "claim2-2m"
with Store(sys.argv[1], readonly=True) as st:
    ft = finetune_rows(st, study)
    pre = pretrain_rows(st, study)
verdicts = [claim1_pretraining(pre), claim2_same_optimizer(ft), claim3_lora(ft)]
print("| claim | line | verdict | effect [95% interval] | units |")
print("|---|---|---|---|---|")
for claim, statement, status, interval, units, _role in verdict_lines(verdicts):
    print(f"| {claim} | {statement.strip()} | {status} | {interval} | {units} |")
for v in verdicts:
    print(f"\nclaim {v.claim}: {v.status}")
    for d in v.details:
        print("  ", d)
print("unbracketed grids:", unbracketed_grids(ft))
