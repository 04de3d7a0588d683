"""How large a forgetting sample a finetune needs, and the error its change from the base will have.

A finetune's evaluation costs forwards over the forgetting sample (eval_tokens), a quarter of it per
source, and the held-out task records. What the sample buys is the error of forgetting_delta, the
change from the base paired over the same windows (docs/training.md); its size is chosen from the
error the verdicts can use (issue 23 §4), and before the run the console says both.
"""

from __future__ import annotations

from typing import Any

# The paired error of Δ (forgetting − the base's, over the same windows) grows with the change:
# se ≈ R128 · |Δ| · √(128 / window) / √windows. R128 = 0.38 is the spread of the per-window
# change relative to Δ on 128-token windows, measured on real nano finetunes 0.11 and 0.15 nats
# from their base (benchmarks/paired_eval_noise.py, docs/BENCHMARKS.md: 0.0076 and 0.0099 on 32
# windows); longer windows average more tokens (√(128/L)). A guide, not a bound: on a randomly
# initialised 135M model's 1024-token windows the spread was 0.10 after 2 steps, 0.51 after 6 (the
# rule: 0.13). Each evaluation prints the measured error (forgetting_delta_se).
PAIRED_R128 = 0.38
# The change at which the expected error is printed: the README's forgetting budget.
TYPICAL_DELTA = 0.1


def expected_delta_se(windows: int, window: int, delta: float = TYPICAL_DELTA) -> float:
    """The paired error of forgetting_delta expected at a change of `delta` nats."""
    return PAIRED_R128 * abs(delta) * (128 / window) ** 0.5 / max(windows, 1) ** 0.5


def evaluation_line(reference: dict[str, Any], forward_tokens: int) -> str:
    """Before the run: what one evaluation reads and the error its Δ is expected to have. The
    default sample (eval_tokens 16384) keeps that error within 0.005 nats up to Δ ≈ 0.14, a quarter
    of the verdicts' 0.02-nat margin (docs/report.md), so two runs' changes 0.02 apart are told apart."""
    se = expected_delta_se(reference["windows"], reference["seq_len"])
    return (f"each evaluation: {forward_tokens:,} tokens through the model (forgetting sample, its per-source "
            f"views, held-out task records); forgetting's change from the base expected ± {se:.4f} at "
            f"{TYPICAL_DELTA:g} nats ({reference['windows']} windows of {reference['seq_len']}, paired; "
            f"eval_tokens sets it, ∝ 1/√tokens)")
