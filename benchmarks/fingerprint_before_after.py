"""One checkpoint, two classifiers: the fingerprint of an older commit against today's.

    git show f10d655:src/forgetless/analysis/fingerprint.py > /tmp/fp_old.py
    git show f10d655:src/forgetless/analysis/fingerprint_reference.json > /tmp/fp_old.json
    python benchmarks/fingerprint_before_after.py /tmp/fp_old.py /tmp/fp_old.json NEW.json RUN_OR_CHECKPOINT...

NEW.json: today's classifier's reference file ("-": the shipped one); an older file of today's
format shows a checkpoint out of sample (e.g. the 80 references before the 2400-step runs joined:
git show 313d42c:src/forgetless/analysis/fingerprint_reference.json).

The old module is loaded under the analysis package (its relative imports resolve there); the
same weight features go to both. Prints the old answer (fine family and probabilities) and today's
headline with and without the prior.
"""

from __future__ import annotations

import importlib.util
import sys

from forgetless.analysis import fingerprint as new
from forgetless.models import load_model


def main(old_module: str, old_reference: str, new_reference: str, checkpoints: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("forgetless.analysis._fingerprint_before", old_module)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)
    for ckpt in checkpoints:
        feats = new.model_features(load_model(ckpt)[0].eval())
        before, now = old.fingerprint(feats, old_reference), new.fingerprint(feats, None if new_reference == "-" else new_reference)
        probs = "" if before.family == "unknown" else ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(before.probabilities.items(), key=lambda x: -x[1]))
        without = now.groups_without_prior and ", ".join(f"{k} {v:.3f}" for k, v in now.groups_without_prior.items())
        print(f"{ckpt}\n  before: {before.family} ({probs})\n  now:    {now.label}"
              + (f" p = {now.probability:.3f}" if now.probability else "")
              + f" (with the prior: {now.groups and ', '.join(f'{k} {v:.3f}' for k, v in now.groups.items())}; "
              f"without: {without})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
