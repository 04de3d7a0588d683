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

Claims 2 and 3 use `path_gap` instead, which speed cannot bias. The step envelope above is taken
over checkpoints alone: a method that moves three times faster has few checkpoints at low
forgetting, so its envelope there is a staircase that sits too high, and in simulation with no
effect the gap came out +0.037 nats per unit at a 3× speed ratio (issue 21). `path_gap` takes
each run's trajectory as a path, from its base point through its checkpoints in step order,
linearly interpolated, and the envelope of a method over those paths:

    front_X(f) = lowest learning loss on any of X's paths at forgetting ≤ f.

The gap is the mean of front_B − front_A over a forgetting window fixed in advance, starting at
the base's own forgetting F0: [F0, F0 + FORGETTING_WINDOW], cut at the smaller of the two methods'
largest forgetting (a grid that never went further says nothing there). A method whose
checkpoints forget less than F0 while learning gets credit at F0 already. The window keeps the
comparison where the paper's theory applies (small moves near the pretraining minimum): points
2-3 nats above the base are another regime.

Between the base and a run's first checkpoint, and between checkpoints, the path is interpolated
linearly in (√(F − F0), L), not in (F, L). Near a pretraining minimum the pretraining loss rises
with the square of a small weight change while the task loss falls linearly with it, so a run's
path is straight in those coordinates and bends like √(F − F0) in (F, L); a straight chord in
(F, L) lies above it, and the method whose first checkpoint forgets more looks worse. With
evaluations every N steps, a finetuning family three times faster was biased this way by 0.024
nats per unit (equal true frontiers); interpolated in √(F − F0) the bias was 0.002, and with dense
early evaluation (1, 2, 4, 8, ... steps) both interpolations agree within 0.002
(benchmarks/verdict_calibration.py, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np

from forgetless.analysis.pareto import dominated_share, learning_within_forgetting
from forgetless.metrics import DELTAS, X_DEFAULT, Y_DEFAULT, value

__all__ = ["DELTAS", "FORGETTING_WINDOW", "cloud", "delta_view", "frontier_effect", "frontier_gap", "path_gap",
           "path_gaps", "paths"]
FORGETTING_WINDOW = 0.5  # nats above the base's forgetting over which path gaps are averaged
MIN_WINDOW = 0.01  # the window is never narrower (about one paired eval standard error)
RUN_KEYS = ("base_optimizer", "base_seed", "task", "method", "optimizer", "rank", "lr", "seed")


def _xy(r, x: str, y: str) -> list[float]:
    """A row's point on the axes x, y (metric names of forgetless.metrics); NaN where unmeasured."""
    return [value(r, x), value(r, y)]


def cloud(rows: list, x: str = X_DEFAULT, y: str = Y_DEFAULT) -> np.ndarray:
    """(n, 2) finite (x, y) points of the rows, step 0 left out; by default (forgetting, learning)."""
    z = np.array([_xy(r, x, y) for r in rows if _step(r, 1) != 0], dtype=float).reshape(-1, 2)
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


def _step(r, missing: int | None = None):
    return (r.get("step", missing) if isinstance(r, dict) else getattr(r, "step", missing))


def _key(r):
    """The run a row belongs to: its run id, else (tables from elsewhere) its RUN_KEYS."""
    if not isinstance(r, dict):
        return r.run_id or tuple(getattr(r, k, None) for k in RUN_KEYS)
    return r.get("run_id") or tuple(r.get(k) for k in RUN_KEYS)


def paths(rows: list, base_point: tuple[float, float] | None = None, x: str = X_DEFAULT,
          y: str = Y_DEFAULT) -> list[np.ndarray]:
    """Each run's (x, y) trajectory in step order, one (k, 2) array per run; by default
    (forgetting, learning).

    A run is the rows sharing RUN_KEYS (unit, task, method, optimizer, rank, lr, finetuning seed).
    Its step-0 point starts the path; a run without one starts at `base_point` when given.
    Non-finite points are left out (a diverged checkpoint ends nothing: the path goes around it).
    """
    runs: dict = {}
    for r in rows:  # a store's rows name their run; tables from elsewhere are grouped by RUN_KEYS
        runs.setdefault(_key(r), []).append(r)
    out = []
    for run_rows in runs.values():
        run_rows = sorted(run_rows, key=lambda r: _step(r) or 0)
        z = np.array([_xy(r, x, y) for r in run_rows], dtype=float).reshape(-1, 2)
        keep = np.all(np.isfinite(z), axis=1)
        z = z[keep]
        has_start = bool(run_rows) and keep[0] and (_step(run_rows[0]) or 0) == 0
        if not has_start and base_point is not None and np.all(np.isfinite(base_point)):
            z = np.vstack([np.asarray(base_point, dtype=float)[None, :], z])
        if len(z):
            out.append(z)
    return out


def segments(runs: list[np.ndarray]) -> np.ndarray:
    """(S, 4) segments (f1, y1, f2, y2) of the paths; a one-point path is a segment of length 0."""
    segs = [np.hstack([z, z]) if len(z) == 1 else np.hstack([z[:-1], z[1:]]) for z in runs if len(z)]
    return np.vstack(segs) if segs else np.empty((0, 4))


def batch_front(segs: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Lowest learning loss on any segment at forgetting ≤ f: segs (B, S, 4), at (B, G) -> (B, G).

    A segment from (f1, y1) to (f2, y2) contributes, at level f, its lowest learning among its
    points with forgetting ≤ f: both endpoints' minimum when f ≥ max(f1, f2), nothing when
    f < min(f1, f2), and in between the lower-forgetting endpoint or the interpolated point at f,
    whichever learns more (the segment is straight, so its minimum is at an end)."""
    first = segs[..., 0] <= segs[..., 2]
    f_lo = np.where(first, segs[..., 0], segs[..., 2])[:, None, :]  # (B, 1, S)
    y_lo = np.where(first, segs[..., 1], segs[..., 3])[:, None, :]
    f_hi = np.where(first, segs[..., 2], segs[..., 0])[:, None, :]
    y_hi = np.where(first, segs[..., 3], segs[..., 1])[:, None, :]
    f = at[:, :, None]  # (B, G, 1)
    span = np.where(f_hi > f_lo, f_hi - f_lo, 1.0)
    y_at = y_lo + (y_hi - y_lo) * np.clip((f - f_lo) / span, 0.0, 1.0)
    value = np.where(f >= f_hi, np.minimum(y_lo, y_hi), np.minimum(y_lo, y_at))
    value = np.where(f < f_lo, np.inf, value)
    return value.min(axis=2) if segs.shape[1] else np.full(at.shape, np.inf)


def path_front(runs: list[np.ndarray], at: np.ndarray) -> np.ndarray:
    """Lowest learning loss on any of the paths at forgetting ≤ f, for each f of `at` (inf if none)."""
    at = np.asarray(at, dtype=float)
    return batch_front(segments(runs)[None], at.reshape(1, -1))[0].reshape(at.shape)


def common_reach(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The smaller of the two methods' largest forgetting on their paths."""
    return min(max(z[:, 0].max() for z in a), max(z[:, 0].max() for z in b)) if a and b else float("nan")


def measured_start(a: list[np.ndarray], b: list[np.ndarray], f0: float) -> float:
    """The lowest forgetting from which both envelopes rest on a measured checkpoint (≥ F0)."""
    def lowest(runs):
        ckpts = [z[1:, 0] for z in runs if len(z) > 1]
        return min(c.min() for c in ckpts) if ckpts else f0
    return max(f0, lowest(a), lowest(b))


def path_gap(a: list[np.ndarray], b: list[np.ndarray], f0: float,
             window: float = FORGETTING_WINDOW, n_grid: int = 64, min_window: float = MIN_WINDOW) -> float:
    """Mean of front_B − front_A over [F0, F0 + window] cut at the smaller of the two methods'
    largest forgetting but never below F0 + min_window, paths interpolated in √(F − F0) (nats;
    positive = A learns more at matched forgetting). When a method never forgot measurably, or
    both lowered the held-out loss, the window is [F0, F0 + min_window]: who learns more at no
    measurable forgetting. NaN when either method has no path."""
    if not a or not b or not np.isfinite(f0):
        return float("nan")
    return float(path_gaps(segments(a)[None], segments(b)[None], np.array([f0]), window, n_grid, min_window)[0])


def path_gaps(a: np.ndarray, b: np.ndarray, f0: np.ndarray, window: float = FORGETTING_WINDOW,
              n_grid: int = 64, min_window: float = MIN_WINDOW) -> np.ndarray:
    """`path_gap` for a batch of comparisons at once: segments a (B, Sa, 4), b (B, Sb, 4), f0 (B,)."""
    reach = np.minimum(np.maximum(a[..., 0], a[..., 2]).max(axis=1), np.maximum(b[..., 0], b[..., 2]).max(axis=1))
    # Never narrower than min_window: when one method never forgot measurably (or both lowered
    # the held-out loss), the comparison is who learns more at no measurable forgetting.
    top = np.maximum(np.minimum(f0 + window, reach), f0 + min_window)
    grid = f0[:, None] + (top - f0)[:, None] * np.linspace(0.0, 1.0, n_grid)[None, :]
    gap = (batch_front(_root(b, f0), _u(grid, f0[:, None])) - batch_front(_root(a, f0), _u(grid, f0[:, None]))).mean(axis=1)
    return np.where(np.isfinite(gap), gap, np.nan)


def _u(f: np.ndarray, f0) -> np.ndarray:
    """Signed √(F − F0): the coordinate in which a small move's path is straight (forgetting
    quadratic, learning linear in the weight change). Monotone, so 'forgetting ≤ f' is unchanged."""
    d = f - f0
    return np.sign(d) * np.sqrt(np.abs(d))


def _root(segs: np.ndarray, f0: np.ndarray) -> np.ndarray:
    out = segs.copy()
    out[..., 0], out[..., 2] = _u(segs[..., 0], f0[:, None]), _u(segs[..., 2], f0[:, None])
    return out
