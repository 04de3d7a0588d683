"""The fingerprint's tables for docs/BENCHMARKS.md (issue 23), from a reference file's features
alone (no training, seconds):

    python benchmarks/fingerprint_axes.py [REFERENCE.json]

1. feature drift: per weight feature, its drift per decade of training steps (RMS over runs
   trained to two lengths) against the distance between the Adam-like and Muon-like centroids,
   and whether it votes (drift < separation);
2. leave-one-out and every axis held out, headline (Adam-like / Muon-like / unknown, with the prior)
   first, worst axis first, then without the prior and the fine family;
3. the reported failure case: each Adam-like reference with attn_in_rowcv moved to 0.249.
"""

from __future__ import annotations

import sys

from forgetless.analysis.fingerprint import FEATURE_SETS, calibrate, load_references
from forgetless.analysis.fingerprint_eval import ADAM_VS_MUON, by_axis, held_out
from forgetless.analysis.fingerprint_model import feature_drift, group_of


def _value(v) -> str:
    """A held-out value as the table names it ('' is a conversion: as trained; True/False: tying)."""
    return {"": "as trained", True: "tied", False: "untied"}.get(v, str(v)) if isinstance(v, (str, bool)) else str(v)


def main(path: str | None = None) -> None:
    refs, _ = load_references(path)
    names = FEATURE_SETS["weights"]
    print(f"{len(refs)} references; weights features\n")
    drift = feature_drift(refs, names)
    print(f"feature drift ({next(iter(drift.values()))['n_runs']} runs at two lengths)\n")
    print("| feature | drift per decade of steps | Adam-like vs Muon-like separation | ratio | votes |")
    print("|---|---|---|---|---|")
    for n, d in sorted(drift.items(), key=lambda x: x[1]["drift"] / x[1]["separation"]):
        print(f"| `{n}` | {d['drift']:.3f} | {d['separation']:.3f} | {d['drift'] / d['separation']:.2f} | "
              f"{'yes' if d['votes'] else 'no'} |")
    clf, loo = calibrate(refs, names)
    n = loo["n"]
    print(f"\nleave-one-out: headline {round(loo['headline_accuracy'] * n)}/{n} (no prior), fine family "
          f"{round(loo['accuracy'] * n)}/{n}; temperature {loo['temperature']:.3g}\n")
    # Reliability of the calibrated (no prior) headline probability, held out one reference at a time.
    right = [h == group_of(t) for h, t in zip(loo["headline_predictions"], loo["truth"], strict=True)]
    print("| leave-one-out headline p | n | right | mean p |")
    print("|---|---|---|---|")
    for lo, hi in ((0.99, 1.01), (0.9, 0.99), (0.8, 0.9), (0.5, 0.8)):
        sel = [i for i, q in enumerate(loo["headline_probability"]) if lo <= q < hi]
        mean = sum(loo["headline_probability"][i] for i in sel) / len(sel) if sel else float("nan")
        print(f"| {lo:g}–{min(hi, 1):g} | {len(sel)} | {sum(right[i] for i in sel)} | {mean:.3f} |")
    print()
    print("| held out | n | headline right (prior) | unknown | wrong | right without prior | wrong without "
          "prior | fine family right |")
    print("|---|---|---|---|---|---|---|---|")
    for a in by_axis(refs, names):
        print(f"| {a['axis']} | {a['n']} | {a['right']} | {a['unknown']} | {a['wrong']} | "
              f"{a['right_without_prior']} | {a['wrong_without_prior']} | {a['fine_right']} |")
        for f in a["folds"]:
            wrong = f" ({', '.join(f['wrong_names'])})" if f["wrong_names"] else ""
            print(f"|   {_value(f['held_out'])} | {f['n']} | {f['right']} | {f['unknown']} | {f['wrong']}{wrong} "
                  f"| | | {f['fine_right']} |")
        for f in a.get("skipped", []):
            print(f"|   {_value(f['held_out'])}: skipped (calibration side {f['n_calibration']}, test side {f['n']}) "
                  "| | | | | | | |")
    for key in ("preset", "steps"):
        a = held_out(refs, names, key, ADAM_VS_MUON)
        print(f"\n{key} held out, AdamW/SignSGD vs Muon only: {a['right']}/{a['n']} right, {a['unknown']} unknown, "
              f"{a['wrong']} wrong")
    print("\nreported failure case (attn_in_rowcv = 0.249 on each Adam-like reference):")
    heads: dict[str, int] = {}
    for r in refs:
        if r.family == "l1->linf":
            p = clf.predict(dict(r.features, attn_in_rowcv=0.249))
            key = f"{p.label}" + (f", fine {p.fine_family}" if p.fine_family else "")
            heads[key] = heads.get(key, 0) + 1
    for k, v in sorted(heads.items()):
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
