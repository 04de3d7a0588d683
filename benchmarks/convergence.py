"""The convergence study's result (issue 22 §2): claim 2 per pretraining budget, read from a
`forgetless sweep convergence` store (forgetless.report.convergence; `forgetless reproduce --preset
convergence` writes the same table and figure into its report).

    python benchmarks/convergence.py runs/convergence --figure docs/figures/convergence.png --md out.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from forgetless.report import convergence
from forgetless.report.render import to_markdown
from forgetless.sweep.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="the sweep directory (holds results.sqlite)")
    ap.add_argument("--study", default="convergence")
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown table here")
    args = ap.parse_args()
    store = args.sweep / "results.sqlite"
    with Store(store) as st:
        runs = st.runs_by_id(args.study)
    started = [r["started_at"] for r in runs.values() if r.get("started_at")]
    finished = [r["finished_at"] for r in runs.values() if r.get("finished_at")]
    if started and finished:
        print(f"wall time: first start to last finish {(max(finished) - min(started)) / 60:.1f} min "
              f"({time.strftime('%H:%M', time.gmtime(min(started)))}-"
              f"{time.strftime('%H:%M', time.gmtime(max(finished)))} UTC)")
    result = convergence.measure(store, args.study, args.sweep)
    for b in result.budgets:
        print(f"\n== budget {b.tokens:,} tokens ({b.tokens_per_param:.2f} tokens per parameter) ==")
        for fam, losses in b.val_loss.items():
            print(f"  {fam} bases: val loss " + ", ".join(f"{x:.3f}" for x in losses)
                  + ("; distance from convergence " + ", ".join(f"{x:+.3f}" for x in b.distance[fam])
                     if b.distance.get(fam) else ""))
        if b.verdict is not None:
            for line in b.verdict.details[:4]:
                print(f"  {line}")
    text = to_markdown("convergence", [convergence.section(result, Path("/tmp/forgetless-convergence"))],
                       args.sweep)
    print("\n" + text)
    if args.md:
        args.md.write_text(text)
    if args.figure:
        print(f"figure: {convergence.figure(result, args.figure)}")


if __name__ == "__main__":
    main()
