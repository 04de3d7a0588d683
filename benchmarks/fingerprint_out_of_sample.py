"""Out of sample: classify newly measured references with the shipped calibration, before they join it.

The references in NEW (a file written by fingerprint_references.py --out) are classified by a
classifier calibrated on the shipped references only (or on --references), so none of them has seen
itself or its siblings. For each: the headline with and without the prior, the fine family shown and
the nearest family, with the weight-only and the full (weights + activations) feature sets.

    python benchmarks/fingerprint_out_of_sample.py NEW.json [--references FILE]
"""

from __future__ import annotations

import argparse
import collections

from forgetless.analysis.fingerprint import FEATURE_SETS, calibrate, load_references
from forgetless.analysis.fingerprint_model import group_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", help="references to classify (fingerprint_references.py --out)")
    ap.add_argument("--references", default=None, help="calibrate on these (default: the shipped file)")
    args = ap.parse_args()
    refs, _ = load_references(args.references)
    new, _ = load_references(args.new)
    names = {r.name for r in refs}
    seen = [r.name for r in new if r.name in names]
    if seen:  # a reference classified by a calibration that holds it is not out of sample
        raise SystemExit(f"already among the calibration references: {', '.join(seen)}")
    for set_name in ("weights", "full"):
        clf, _ = calibrate(refs, FEATURE_SETS[set_name])
        tally: collections.Counter[str] = collections.Counter()
        print(f"-- {set_name} features, calibrated on {len(refs)} references")
        for r in new:
            p = clf.predict(r.features, set_name)
            truth = group_of(r.family)
            verdict = "unknown" if p.headline == "unknown" else ("right" if p.headline == truth else "wrong")
            tally[verdict] += 1
            g = {k: round(v, 3) for k, v in (p.groups or {}).items()}
            g0 = {k: round(v, 3) for k, v in (p.groups_without_prior or {}).items()}
            print(f"{r.name} ({r.family}): {verdict}: headline {p.headline} p={p.probability} "
                  f"groups {g} without the prior {g0} fine {p.fine_family} nearest {p.family}")
        print(f"   right {tally['right']}, unknown {tally['unknown']}, wrong {tally['wrong']} of {len(new)}")


if __name__ == "__main__":
    main()
