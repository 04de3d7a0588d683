"""How large a forgetting sample a finetune needs, and the error its change from the base will have.

A finetune's evaluation costs forwards over the forgetting sample (eval_tokens), a quarter of it per
source, and the held-out task records. What the sample buys is the error of forgetting_delta, the
change from the base paired over the same windows (docs/training.md); its size is chosen from the
error the verdicts can use (issue 23 §4), and before the run the console says both.
"""

from __future__ import annotations

from typing import Any

# The paired error of Δ (forgetting − the base's, over the same windows) grows with the change:
# se ≈ R128 · |Δ| · (128 / window)^WINDOW_EXPONENT / √windows. R128 = 0.38 is the spread of the
# per-window change relative to Δ on 128-token windows, measured on real nano finetunes 0.11 and
# 0.15 nats from their base (benchmarks/paired_eval_noise.py, docs/BENCHMARKS.md: 0.0076 and 0.0099
# on 32 windows). A longer window averages more tokens, but its tokens' changes are correlated
# (they share a context): on a trained 88M gpt2-small finetune the spread fell from 0.40 on
# 128-token blocks to 0.25 on the 1024-token windows that hold them, an exponent of 0.22, not the
# 0.5 of independent tokens (benchmarks/paired_window_length.py; re-cut into windows of 128-512
# the spread scattered at 0.42-0.46). 0.2 rounds toward correlation: on a randomly initialised
# 135M model it was 0.05 (spread 0.61 on blocks of 128, 0.55 on windows of 1024), and on the real
# SmolLM2-135M-Instruct the spread on 1024-token windows was 0.14, below the rule's 0.25. A guide,
# not a bound; each evaluation prints the measured error (forgetting_delta_se).
PAIRED_R128 = 0.38
WINDOW_EXPONENT = 0.2
# The change at which the expected error is printed: the README's forgetting budget.
TYPICAL_DELTA = 0.1


def expected_delta_se(windows: int, window: int, delta: float = TYPICAL_DELTA) -> float:
    """The paired error of forgetting_delta expected at a change of `delta` nats."""
    return PAIRED_R128 * abs(delta) * (128 / window) ** WINDOW_EXPONENT / max(windows, 1) ** 0.5


def evaluation_line(reference: dict[str, Any], forward_tokens: int) -> str:
    """Before the run: what one evaluation reads and the error its Δ is expected to have. The
    default sample (eval_tokens 16384) keeps that error within 0.005 nats up to Δ ≈ 0.14 on
    128-token windows (a quarter of the verdicts' 0.02-nat margin, docs/report.md) and within 0.01
    on 1024-token windows (0.0063 at the README's 0.1-nat budget); studies at 1024 set 65536."""
    se = expected_delta_se(reference["windows"], reference["seq_len"])
    return (f"each evaluation: {forward_tokens:,} tokens through the model (forgetting sample, its per-source "
            f"views, held-out task records); forgetting's change from the base expected ± {se:.4f} at "
            f"{TYPICAL_DELTA:g} nats ({reference['windows']} windows of {reference['seq_len']}, paired; "
            f"eval_tokens sets it, ∝ 1/√tokens)")
