"""Effects per unit of evidence: the one number each claim's test is run on.

Frontier comparisons never use the step-0 point (the untouched base, the same for every method;
it would cap every share at 1 − 1/n). Two point clouds A and B (forgetting, learning; losses, lower
is better) are compared over the forgetting range both reach: points that forget more than the
other method ever does are left out, since the other method's grid never went there and they say
nothing about which frontier is better (a high learning rate that forgets a lot is a fact of the
grid, not of the method). Points that forget *less* than anything of the other method stay in:
forgetting less is what the claims are about.

The effect is the learning gap between the two frontiers at matched forgetting, averaged over the
forgetting range both reach: with front_X(f) = the lowest learning loss among X's points that
forget at most f, effect = mean over f in [lo, hi] of front_B(f) − front_A(f), in nats, where lo is
the larger of the two clouds' least forgetting and hi the smaller of their largest (the area
between the frontiers, divided by the range: a hypervolume difference restricted to the common
range). Positive when A learns more than B at the same forgetting; 0 in expectation when they lie
on one curve (an optimizer that is merely faster slides along the same frontier). It is
continuous and roughly linear in a shift of the frontier, so that a t-test over units is apt;
the share of B's points dominated by A (and the reverse) is reported beside it.
"""

from __future__ import annotations

import numpy as np

from forgetless.analysis.pareto import dominated_share, learning_within_forgetting

DELTAS = (0.1, 0.25, 0.5, 1.0)  # forgetting budgets of the Δ-view (nats above the model's own base)


def cloud(rows: list[dict]) -> np.ndarray:
    """(n, 2) finite (forgetting, learning) points of the rows, step 0 left out."""
    z = np.array([[r["forgetting"], r["learning"]] for r in rows if r.get("step", 1) != 0],
                 dtype=float).reshape(-1, 2)
    return z[np.all(np.isfinite(z), axis=1)]


def common_range(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both clouds cut at the smaller of their largest forgetting values."""
    top = min(a[:, 0].max(), b[:, 0].max())
    return a[a[:, 0] <= top], b[b[:, 0] <= top]


def front(points: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Lowest learning loss among the points that forget at most f, for each f of `at` (inf if none)."""
    order = np.argsort(points[:, 0])
    best = np.minimum.accumulate(points[order, 1])
    idx = np.searchsorted(points[order, 0], at, side="right") - 1
    return np.where(idx >= 0, best[np.maximum(idx, 0)], np.inf)


def frontier_gap(a: np.ndarray, b: np.ndarray, n_grid: int = 64) -> float:
    """Mean of front_B − front_A over the common forgetting range (nats; positive = A better)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    lo = max(a[:, 0].min(), b[:, 0].min())
    hi = max(lo, min(a[:, 0].max(), b[:, 0].max()))
    grid = np.linspace(lo, hi, n_grid)
    return float(np.mean(front(b, grid) - front(a, grid)))


def frontier_effect(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, int]:
    """(frontier_gap, share of B dominated by A, share of A dominated by B, smaller cloud size),
    the shares over the common range. NaN gap when either cloud is empty."""
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    ca, cb = common_range(a, b)
    return frontier_gap(a, b), dominated_share(a, cb), dominated_share(b, ca), min(len(ca), len(cb))


def delta_view(points: np.ndarray, base_forgetting: float) -> np.ndarray:
    """Best learning loss within Δ of the model's own base forgetting, for each Δ of DELTAS."""
    if len(points) == 0 or not np.isfinite(base_forgetting):
        return np.full(len(DELTAS), np.nan)
    return learning_within_forgetting(points, base_forgetting, DELTAS)
