"""Pareto frontiers of the learning–forgetting trade-off (pure numpy).

A point is one checkpoint's (forgetting, learning) pair; a method's point cloud is every checkpoint
of every learning rate and seed of that method. Both axes are losses, lower is better, unless
`maximize=(bool, bool)` flips an axis (accuracies). Internally every function works in "oriented"
coordinates z = s * p with s = -1 on maximized axes, so that lower is always better there.

Definitions (oriented coordinates, as in the paper's appendix A.1 and docs/sweep.md):

- a dominates b  <=>  a_x <= b_x and a_y <= b_y, with at least one inequality strict.
  Identical points do not dominate each other, so duplicates are all in the Pareto set.
- Pareto set: the points no other point dominates.
- Robust frontier (paper appendix A.1): a is kept when, for every other *distinct* point b,
  a_x < b_x - eps_x  or  a_y < b_y - eps_y.  Exact duplicates count as one point (otherwise the
  shared step-0 point of all runs on one base would knock itself out); the robust frontier is a
  subset of the Pareto set and equals its duplicate-free part at eps = 0.
- Hypervolume against a reference r: the area of  U_p [p_x, r_x] x [p_y, r_y]  (2-D, exact).
- dominated_share(A, B): the fraction of B's points dominated by at least one point of A.

Rows with a NaN or infinite coordinate (a diverged checkpoint) are ignored everywhere: never on a
frontier, never dominating, not counted in a share's denominator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Maximize = bool | Sequence[bool]


def _flags(maximize: Maximize) -> np.ndarray:
    flags = np.broadcast_to(np.asarray(maximize, dtype=bool), (2,))
    return flags.copy()


def oriented(points, maximize: Maximize = False) -> np.ndarray:
    """(n, 2) float array in which lower is better on both axes (maximized axes negated)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must be an (n, 2) array of (forgetting, learning); got shape {arr.shape}")
    return np.where(_flags(maximize), -arr, arr)


def _finite(z: np.ndarray) -> np.ndarray:
    return np.isfinite(z).all(axis=1)


def _dominated_by(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of b (oriented, finite), whether some row of a (oriented, finite) dominates it.

    Sort a by x; for b, m_le = min a_y over a_x <= b_x and m_lt = min a_y over a_x < b_x.
    b is dominated  <=>  m_le < b_y  (that point has a_x <= b_x, a_y < b_y)
                     or  m_lt <= b_y (that point has a_x < b_x, a_y <= b_y).
    O((n + m) log n).
    """
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(b), dtype=bool)
    order = np.argsort(a[:, 0], kind="stable")
    ax, ay = a[order, 0], a[order, 1]
    prefix_min = np.minimum.accumulate(ay)
    k_le = np.searchsorted(ax, b[:, 0], side="right")  # number of a with a_x <= b_x
    k_lt = np.searchsorted(ax, b[:, 0], side="left")  # number of a with a_x <  b_x
    inf = np.inf
    m_le = np.where(k_le > 0, prefix_min[np.maximum(k_le - 1, 0)], inf)
    m_lt = np.where(k_lt > 0, prefix_min[np.maximum(k_lt - 1, 0)], inf)
    return (m_le < b[:, 1]) | (m_lt <= b[:, 1])


def pareto_mask(points, maximize: Maximize = False) -> np.ndarray:
    """Boolean mask of the points that no other point dominates (non-finite rows are False)."""
    z = oriented(points, maximize)
    mask = _finite(z)
    # A point never dominates itself (dominance needs one strict inequality), so testing each
    # point against the whole finite set is the same as testing it against the others.
    mask[mask] = ~_dominated_by(z[mask], z[mask])
    return mask


def pareto_set(points, maximize: Maximize = False) -> np.ndarray:
    """Indices of the Pareto set, ordered along the frontier (by forgetting, then learning)."""
    return _sorted_indices(points, pareto_mask(points, maximize), maximize)


def _sorted_indices(points, mask: np.ndarray, maximize: Maximize) -> np.ndarray:
    z = oriented(points, maximize)
    idx = np.flatnonzero(mask)
    return idx[np.lexsort((z[idx, 1], z[idx, 0]))]


def _eps_pair(eps) -> np.ndarray:
    e = np.broadcast_to(np.asarray(eps, dtype=np.float64), (2,)).copy()
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError(f"eps must be a non-negative number or a pair (eps_forgetting, eps_learning); got {eps!r}")
    return e


def robust_mask(points, eps=0.01, maximize: Maximize = False) -> np.ndarray:
    """Mask of the robust frontier of paper appendix A.1 (see the module docstring).

    a is kept  <=>  for every distinct b:  a_x < b_x - eps_x  or  a_y < b_y - eps_y   (oriented).
    Equivalently no distinct b lies in the box  b_x <= a_x + eps_x, b_y <= a_y + eps_y.
    Candidates are Pareto points only (a robust point is never weakly dominated), and each is
    checked against all finite points in O(n) vectorised work.
    """
    e = _eps_pair(eps)
    z = oriented(points, maximize)
    keep = pareto_mask(points, maximize)
    fin = z[_finite(z)]
    for i in np.flatnonzero(keep):
        a = z[i]
        in_box = (fin[:, 0] <= a[0] + e[0]) & (fin[:, 1] <= a[1] + e[1])
        distinct = (fin[:, 0] != a[0]) | (fin[:, 1] != a[1])
        if np.any(in_box & distinct):
            keep[i] = False
    return keep


def robust_frontier(points, eps=0.01, maximize: Maximize = False) -> np.ndarray:
    """Indices of the robust frontier, ordered along it; one index per group of exact duplicates."""
    idx = _sorted_indices(points, robust_mask(points, eps, maximize), maximize)
    z = oriented(points, maximize)[idx]
    if len(idx) <= 1:
        return idx
    first = np.ones(len(idx), dtype=bool)
    first[1:] = np.any(z[1:] != z[:-1], axis=1)
    return idx[first]


def hypervolume(points, reference, maximize: Maximize = False) -> float:
    """Area dominated by the points and bounded by `reference` (2-D, exact).

    With the Pareto points inside the reference box sorted by x (so y falls),
    HV = sum_i (x_{i+1} - x_i) * (r_y - y_i),  x_{k+1} = r_x.
    Points not strictly better than the reference on both axes add nothing.
    """
    z = oriented(points, maximize)
    r = oriented(np.asarray(reference, dtype=np.float64).reshape(1, 2), maximize)[0]
    if not np.all(np.isfinite(r)):
        raise ValueError(f"reference must be a finite (forgetting, learning) pair; got {reference!r}")
    z = z[_finite(z)]
    z = z[(z[:, 0] < r[0]) & (z[:, 1] < r[1])]
    if len(z) == 0:
        return 0.0
    front = z[pareto_mask(z)]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    xs = np.append(front[:, 0], r[0])
    return float(np.sum(np.diff(xs) * (r[1] - front[:, 1])))


def dominated_share(a_points, b_points, maximize: Maximize = False) -> float:
    """Share of B's (finite) points dominated by some point of A; NaN when B has none."""
    a = oriented(a_points, maximize)
    b = oriented(b_points, maximize)
    a, b = a[_finite(a)], b[_finite(b)]
    if len(b) == 0:
        return float("nan")
    return float(np.mean(_dominated_by(a, b)))


def default_reference(*point_sets, maximize: Maximize = False) -> np.ndarray:
    """A shared reference point: the worst finite value on each axis over all the sets.

    Returned in the original (un-oriented) coordinates; every finite point lies inside its box.
    """
    zs = [oriented(p, maximize) for p in point_sets]
    z = np.concatenate([x[_finite(x)] for x in zs]) if zs else np.zeros((0, 2))
    if len(z) == 0:
        raise ValueError("default_reference needs at least one finite point")
    worst = z.max(axis=0)
    return np.where(_flags(maximize), -worst, worst)


def best_lr_mask(points, lrs, maximize: Maximize = False) -> np.ndarray:
    """Points of the learning rate that learns most (the view of Biderman et al. 2024, paper B.1).

    The chosen learning rate is the one whose best learning value over its checkpoints and seeds
    is best (lowest loss, or highest accuracy when the learning axis is maximized); ties go to the
    smaller learning rate. Non-finite points never decide the choice.
    """
    z = oriented(points, maximize)
    lrs = np.asarray(lrs, dtype=np.float64)
    if lrs.shape != (len(z),):
        raise ValueError(f"lrs must have one entry per point ({len(z)}); got shape {lrs.shape}")
    fin = _finite(z)
    if not fin.any():
        return np.zeros(len(z), dtype=bool)
    best_lr, best_y = None, np.inf
    for lr in np.unique(lrs[fin]):  # ascending, so ties keep the smaller lr
        y = z[fin & (lrs == lr), 1].min()
        if y < best_y:
            best_lr, best_y = lr, y
    return lrs == best_lr


def learning_within_forgetting(points, base_forgetting: float, deltas=(0.1, 0.25, 0.5, 1.0, 2.0),
                               maximize: Maximize = False) -> np.ndarray:
    """For each delta, the best learning reached while forgetting stays within delta of the base.

    Losses: min{ y : x <= base + delta }.  Accuracies (maximize): max{ y : x >= base - delta }.
    NaN where no point qualifies. Values are returned in the original coordinates.
    """
    flags = _flags(maximize)
    z = oriented(points, maximize)
    z = z[_finite(z)]
    base = -base_forgetting if flags[0] else base_forgetting
    out = np.full(len(deltas), np.nan)
    for k, d in enumerate(deltas):
        sel = z[z[:, 0] <= base + d, 1]
        if len(sel):
            out[k] = -sel.min() if flags[1] else sel.min()
    return out


def forgetting_at_learning(points, levels, maximize: Maximize = False) -> np.ndarray:
    """For each learning level L, the least forgetting among points that learn at least that well.

    Losses: min{ x : y <= L }.  Accuracies: max{ x : y >= L }. NaN where no point qualifies.
    """
    flags = _flags(maximize)
    z = oriented(points, maximize)
    z = z[_finite(z)]
    out = np.full(len(levels), np.nan)
    for k, level in enumerate(levels):
        lv = -level if flags[1] else level
        sel = z[z[:, 1] <= lv, 0]
        if len(sel):
            out[k] = -sel.min() if flags[0] else sel.min()
    return out
