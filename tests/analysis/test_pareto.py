"""Frontiers, hypervolume and dominance against brute force and hand-worked cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from forgetless.analysis import pareto as P

# ---------------------------------------------------------------- brute-force references (O(n^2))


def bf_dominates(a, b, maximize=(False, False)):
    """Literal definition, with the comparisons written out per axis (no shared code)."""
    better_eq, strict = True, False
    for k in range(2):
        if maximize[k]:
            better_eq &= a[k] >= b[k]
            strict |= a[k] > b[k]
        else:
            better_eq &= a[k] <= b[k]
            strict |= a[k] < b[k]
    return better_eq and strict


def bf_pareto(pts, maximize=(False, False)):
    ok = [bool(np.all(np.isfinite(p))) for p in pts]
    return np.array([
        ok[i] and not any(ok[j] and bf_dominates(pts[j], pts[i], maximize) for j in range(len(pts)))
        for i in range(len(pts))
    ])


def bf_robust(pts, eps, maximize=(False, False)):
    """Paper A.1 read literally, 'other' meaning other distinct point."""
    ex, ey = eps
    keep = []
    for a in pts:
        if not np.all(np.isfinite(a)):
            keep.append(False)
            continue
        good = True
        for b in pts:
            if not np.all(np.isfinite(b)) or (a[0] == b[0] and a[1] == b[1]):
                continue
            if maximize[0]:
                cx = a[0] > b[0] + ex
            else:
                cx = a[0] < b[0] - ex
            if maximize[1]:
                cy = a[1] > b[1] + ey
            else:
                cy = a[1] < b[1] - ey
            good &= bool(cx or cy)
        keep.append(good)
    return np.array(keep)


def bf_hypervolume(pts, ref):
    """Union area of the boxes [p, ref] by coordinate compression (losses only)."""
    boxes = [p for p in pts if np.all(np.isfinite(p)) and p[0] < ref[0] and p[1] < ref[1]]
    if not boxes:
        return 0.0
    xs = sorted({p[0] for p in boxes} | {ref[0]})
    ys = sorted({p[1] for p in boxes} | {ref[1]})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(zip(xs[:-1], xs[1:], strict=True), zip(ys[:-1], ys[1:], strict=True)):
        if any(p[0] <= x0 and p[1] <= y0 for p in boxes):
            area += (x1 - x0) * (y1 - y0)
    return area


def bf_share(a, b, maximize=(False, False)):
    bs = [q for q in b if np.all(np.isfinite(q))]
    if not bs:
        return float("nan")
    fa = [p for p in a if np.all(np.isfinite(p))]
    return sum(any(bf_dominates(p, q, maximize) for p in fa) for q in bs) / len(bs)


def cloud(rng, n, grid=None):
    """Random points; on a coarse grid they have many ties and duplicates."""
    if grid:
        return rng.integers(0, grid, size=(n, 2)).astype(float) / grid
    return rng.random((n, 2))


# ---------------------------------------------------------------- random clouds


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("grid", [None, 5])
def test_pareto_matches_brute_force(seed, grid):
    rng = np.random.default_rng(seed)
    pts = cloud(rng, 40, grid)
    for mx in [(False, False), (True, False), (False, True), (True, True)]:
        np.testing.assert_array_equal(P.pareto_mask(pts, maximize=mx), bf_pareto(pts, mx))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("grid", [None, 6])
def test_robust_matches_brute_force(seed, grid):
    rng = np.random.default_rng(100 + seed)
    pts = cloud(rng, 40, grid)
    for eps in [(0.0, 0.0), (0.01, 0.01), (0.05, 0.2), (0.3, 0.0)]:
        for mx in [(False, False), (True, True), (False, True)]:
            np.testing.assert_array_equal(P.robust_mask(pts, eps, maximize=mx), bf_robust(pts, eps, mx))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("grid", [None, 4])
def test_hypervolume_matches_brute_force(seed, grid):
    rng = np.random.default_rng(200 + seed)
    pts = cloud(rng, 25, grid)
    ref = np.array([0.9, 0.8])  # some points lie outside the box
    assert P.hypervolume(pts, ref) == pytest.approx(bf_hypervolume(pts, ref), abs=1e-12)
    # Maximizing both axes is the same problem on the negated cloud.
    assert P.hypervolume(-pts, -ref, maximize=True) == pytest.approx(bf_hypervolume(pts, ref), abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("grid", [None, 4])
def test_dominated_share_matches_brute_force(seed, grid):
    rng = np.random.default_rng(300 + seed)
    a, b = cloud(rng, 30, grid), cloud(rng, 20, grid)
    for mx in [(False, False), (True, False), (True, True)]:
        assert P.dominated_share(a, b, maximize=mx) == pytest.approx(bf_share(a, b, mx))
        assert P.dominated_share(b, a, maximize=mx) == pytest.approx(bf_share(b, a, mx))


# ---------------------------------------------------------------- hand-made cases


def test_hand_made_pareto_with_ties_and_duplicates():
    pts = np.array([
        [1.0, 5.0],  # 0 frontier
        [1.0, 5.0],  # 1 duplicate of 0: still on the frontier
        [1.0, 6.0],  # 2 same x, worse y: dominated by 0
        [2.0, 3.0],  # 3 frontier
        [3.0, 3.0],  # 4 same y, worse x: dominated by 3
        [4.0, 1.0],  # 5 frontier
        [5.0, 5.0],  # 6 dominated
        [np.nan, 0.0],  # 7 diverged: ignored
    ])
    assert P.pareto_mask(pts).tolist() == [True, True, False, True, False, True, False, False]
    assert P.pareto_set(pts).tolist() == [0, 1, 3, 5]


def test_hand_made_robust_frontier():
    # (1, 5) is beaten on y by (1.005, 3) and not better than it by more than eps on x: dropped.
    pts = np.array([[1.0, 5.0], [1.005, 3.0], [2.0, 2.995], [3.0, 1.0], [3.0, 1.0]])
    assert P.robust_frontier(pts, eps=0.01).tolist() == [1, 3]  # duplicate (3, 1) counted once
    # Per-axis eps: with eps_y = 5 no point beats all others on y by that much, and on x
    # (1, 5) beats (1.005, 3) by only 0.005 < 0.01 while the others are beaten by (1, 5): none kept.
    assert P.robust_frontier(pts, eps=(0.01, 5.0)).tolist() == []
    # A tiny eps on x and none on y: every distinct Pareto point survives.
    assert P.robust_frontier(pts, eps=(0.001, 0.0)).tolist() == [0, 1, 2, 3]
    # A large eps on x keeps only points better on y by more than eps_y than everyone else.
    assert P.robust_frontier(pts, eps=(10.0, 0.0)).tolist() == [3]
    # Accuracies: same cloud negated, axes maximized, same answer.
    # Ordered along the frontier from the least-forgetting end (highest accuracy first here).
    assert P.robust_frontier(-pts, eps=0.01, maximize=True).tolist() == [1, 3]


def test_hand_made_hypervolume():
    # Staircase by hand: (1,3),(2,2),(3,1) against (4,4): 3*1 + 2*1 + 1*1 = 6 ... plus strips:
    # x in [1,2): 4-3=1; [2,3): 4-2=2; [3,4): 4-1=3 -> 1+2+3 = 6.
    pts = [[1, 3], [2, 2], [3, 1], [3.5, 3.5], [2, 2]]
    assert P.hypervolume(pts, [4, 4]) == pytest.approx(6.0)
    assert P.hypervolume([[5, 5]], [4, 4]) == 0.0
    assert P.hypervolume([[1, 4]], [4, 4]) == 0.0  # on the reference's edge: no area


def test_hand_made_dominated_share():
    a = [[1, 1]]
    b = [[1, 1], [1, 2], [2, 1], [0, 5], [np.inf, 9]]  # equal point is not dominated; inf ignored
    assert P.dominated_share(a, b) == pytest.approx(2 / 4)
    assert np.isnan(P.dominated_share(a, []))


def test_best_lr_view():
    pts = np.array([[1, 4.0], [2, 3.0], [1, 5.0], [3, 2.0], [9, np.nan]])
    lrs = np.array([1e-4, 1e-4, 3e-4, 3e-4, 1e-3])
    assert P.best_lr_mask(pts, lrs).tolist() == [False, False, True, True, False]
    # Accuracy on the learning axis: highest wins -> lr 3e-4 has 5.0.
    assert P.best_lr_mask(pts, lrs, maximize=(False, True)).tolist() == [False, False, True, True, False]
    acc = np.array([[1, 0.9], [1, 0.2], [1, 0.9]])
    assert P.best_lr_mask(acc, [2e-4, 1e-4, 1e-4], maximize=True).tolist() == [False, True, True]


def test_tables_by_hand():
    pts = np.array([[4.0, 3.0], [4.2, 2.5], [4.6, 2.0], [6.0, 1.0]])
    got = P.learning_within_forgetting(pts, base_forgetting=4.0, deltas=(0.1, 0.25, 0.5, 1.0, 2.0))
    np.testing.assert_allclose(got, [3.0, 2.5, 2.5, 2.0, 1.0])
    got = P.forgetting_at_learning(pts, levels=(0.5, 1.0, 2.2, 3.0))
    np.testing.assert_allclose(got, [np.nan, 6.0, 4.6, 4.0])
    acc = np.array([[0.6, 0.1], [0.55, 0.3]])  # general accuracy, task accuracy
    np.testing.assert_allclose(P.learning_within_forgetting(acc, 0.6, (0.01, 0.1), maximize=True), [0.1, 0.3])
    np.testing.assert_allclose(P.forgetting_at_learning(acc, (0.2, 0.05), maximize=True), [0.55, 0.6])


def test_default_reference_and_bad_input():
    ref = P.default_reference([[1, 2], [3, np.nan]], [[2, 1]])
    np.testing.assert_allclose(ref, [2, 2])
    with pytest.raises(ValueError, match="eps"):
        P.robust_frontier([[1, 2]], eps=-1)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        P.pareto_set(np.zeros((3, 3)))
    assert P.pareto_set([]).tolist() == []
