"""How often `forgetless compare` decides, with and without Holm's correction over a panel's pairs.

Simulated panels of 10 remedies x 3 pretraining seeds (the model of tests/report/test_compare_calibration.py):
a null where every remedy has the same frontier, and one where remedy r3 is 4x cheaper in forgetting.

    python benchmarks/compare_calibration.py [--panels 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import numpy as np

import forgetless.report.compare as compare
from forgetless.report.statistics import FAILS, HOLDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "report"))
from test_compare_calibration import COST, NAMES, SPEEDS, _rows  # noqa: E402


def measure(panels: int, correct: bool) -> str:
    keep = compare.holm if correct else (lambda pairs, margin, level=0.05: None)
    with mock.patch.object(compare, "holm", keep):
        rng = np.random.default_rng(10)
        null = sum(any(p.decision.status in (HOLDS, FAILS) for p in
                       compare.compare_panel("b", "t", _rows(rng, dict.fromkeys(NAMES, COST), SPEEDS)).pairs)
                   for _ in range(panels))
        rng = np.random.default_rng(11)
        named = decided = wrong = 0
        for _ in range(panels):
            pc = compare.compare_panel("b", "t", _rows(rng, {**dict.fromkeys(NAMES, COST), "r3": COST / 4}, SPEEDS))
            sure = "decisively better" in pc.answer and "no remedy" not in pc.answer
            named += pc.best == "r3"
            decided += pc.best == "r3" and sure
            wrong += pc.best != "r3" and sure
    return (f"holm={correct}: null panels with a decided pair {null}/{panels}; one better: named {named}/{panels}, "
            f"decided {decided}/{panels}, another remedy decided best {wrong}/{panels}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--panels", type=int, default=200)
    a = ap.parse_args()
    for correct in (False, True):
        print(measure(a.panels, correct), flush=True)


if __name__ == "__main__":
    main()
