"""The fingerprint's classifier: from log-features to the answer a practitioner acts on.

Two levels (issue 23):
- the headline, a group of families: "Adam-like (element-wise)" (ℓ1→ℓ∞: AdamW, SignSGD, Lion,
  grouped with the entry-selective column / row top-1 rules ℓ1→ℓ1, ℓ∞→ℓ∞) or "Muon-like
  (spectral)" (ℓ2→ℓ2), or "unknown". Its probability is the sum of the fine families' ones;
  `recommend` and `create_optimizer(family="auto")` act on it alone.
- the fine family within the group, shown only when decisive: ≥ FINE_DECISIVE of its group's
  probability both with the prior and without it (so the prior alone never names it).

Nearest centroid: t = log(feature), standardised by the pooled within-family σ_j; distance to
family k is d_k² = mean_j ((t_j − c_kj) / σ_j)² over the features that vote, and
    P(k | t) ∝ π(group of k) · π(k | group) · exp(−d_k² / 2τ),
with τ fitted to the leave-one-out log-likelihood of the references' groups (each group weighing
the same). Without the prior, π is uniform over the groups and within each group; with it (the
default for a real checkpoint), π is PRIOR_GROUPS and PRIOR_WITHIN: public pretraining runs use
AdamW-like optimizers, Muon / MuonClip, Shampoo / SOAP, and no column or row top-1.

A feature votes only when its drift with training length (per decade of steps, on references
trained to several lengths) is smaller than how far it separates the groups: a real checkpoint is
trained for 10⁴–10⁶ steps, far beyond the references, and a drifting feature would decide by
training length instead of by optimizer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

TAUS = np.logspace(-2, 2, 41)
FLOOR = 1e-4  # log(max(x, FLOOR)): sparsities can be exactly 0
# Not a fingerprint of the optimizer but of training at all (see fingerprint.weight_features).
TRAINED_FEATURE = "norm_gain_dev"

FAMILY_GROUP = {"l1->linf": "adam-like", "l1->l1": "adam-like", "linf->linf": "adam-like", "l2->l2": "muon-like"}
GROUP_LABELS = {"adam-like": "Adam-like (element-wise)", "muon-like": "Muon-like (spectral)", "unknown": "unknown"}
# The prior for real checkpoints. Groups: the provenance registry (recommend/provenance.json)
# documents 10 AdamW-pretrained open families and 4 Muon ones; Shampoo / SOAP (spectral-like
# preconditioners) have none documented there but are in use: 0.7 / 0.3. Within the element-wise
# group no public model was pretrained with column or row top-1: 1% each.
PRIOR_GROUPS = {"adam-like": 0.7, "muon-like": 0.3}
PRIOR_WITHIN = {"l1->linf": 0.98, "l1->l1": 0.01, "linf->linf": 0.01}
CONFIDENCE = 0.8  # a headline group below this probability is "unknown" (and recommend falls back to AdamW)
FINE_DECISIVE = 0.9  # the fine family's share of its group's probability (with and without the prior) to be shown


def group_of(family: str) -> str:
    """The headline group of a fine family (a family outside the table is its own group)."""
    return FAMILY_GROUP.get(family, family)


def _t(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, FLOOR))


@dataclass
class Reference:
    """One calibration checkpoint: how it was trained, and its features."""

    name: str
    optimizer: str
    family: str
    features: dict[str, float]
    preset: str = ""
    seed: int = 0
    lr: float = 0.0
    tokens: int = 0
    val_loss: float = math.nan
    steps: int = 0
    weight_decay: float = 0.1  # of pretraining (the shipped references before issue 23 all used 0.1)
    conversion: str = ""  # "" as trained, "bf16" after a bfloat16 round trip
    tied: bool = True  # input embedding shared with the output head (the presets tie; many real models do not)


def matrix(refs: list[Reference], names: list[str]) -> np.ndarray:
    return np.array([[r.features.get(n, math.nan) for n in names] for r in refs], dtype=np.float64)


def feature_drift(refs: list[Reference], names: list[str]) -> dict[str, dict]:
    """Per feature: `drift`, the RMS change of log(feature) per decade of training steps over runs
    trained to several lengths (same preset, optimizer, seed, lr, weight decay, conversion, tying: the
    shortest against the longest); `separation`, the smallest distance between two groups'
    centroids of log(feature) (a group's centroid: the mean of its families'); `votes` when drift
    < separation. Without two lengths of one run the drift is unknown and every feature votes."""
    T = _t(matrix(refs, names))
    runs: dict[tuple, list[int]] = {}
    for i, r in enumerate(refs):
        runs.setdefault((r.preset, r.optimizer, r.seed, r.lr, r.weight_decay, r.conversion, r.tied), []).append(i)
    slopes = []
    for idx in runs.values():
        lo, hi = min(idx, key=lambda i: refs[i].steps), max(idx, key=lambda i: refs[i].steps)
        if refs[hi].steps > refs[lo].steps > 0:
            slopes.append((T[hi] - T[lo]) / math.log10(refs[hi].steps / refs[lo].steps))
    fams = sorted({r.family for r in refs})
    fam_c = {k: np.nanmean(T[[r.family == k for r in refs]], 0) for k in fams}
    groups = sorted({group_of(k) for k in fams})
    if len(groups) < 2:  # one group: separate its families instead
        centres = list(fam_c.values())
    else:
        centres = [np.mean([fam_c[k] for k in fams if group_of(k) == g], 0) for g in groups]
    pairs = [np.abs(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]
    sep = np.min(pairs, 0) if pairs else np.full(len(names), np.inf)  # one family: nothing to separate
    drift = np.sqrt(np.nanmean(np.square(slopes), 0)) if slopes else np.full(len(names), np.nan)
    return {n: {"drift": float(drift[j]), "separation": float(sep[j]), "n_runs": len(slopes),
                "votes": bool(not slopes or drift[j] < sep[j])} for j, n in enumerate(names)}


@dataclass
class Prediction:
    headline: str  # "adam-like", "muon-like" (or another group) or "unknown": the answer to act on
    probability: float | None  # the headline group's probability with the prior (None when unknown)
    groups: dict[str, float] | None  # group -> probability with the prior (None when out of range)
    groups_without_prior: dict[str, float] | None
    headline_without_prior: str
    fine_family: str | None  # the fine family when decisive within its group, else None
    family: str  # nearest fine family, or "unknown" when out of range: the record, not the answer
    probabilities: dict[str, float]  # fine families, without the prior; not an answer
    distance: float  # RMS standardised distance to the nearest family centroid
    unknown_distance: float
    feature_set: str
    missing: list[str] = field(default_factory=list)
    distances: dict[str, float] = field(default_factory=dict)  # to every family's centroid
    out_of_range: list[dict] = field(default_factory=list)  # feature, value, lo, hi, excess_sigma
    range_limit: float = math.inf
    deciding: list[dict] = field(default_factory=list)  # feature, value, against, ranges {group: [lo, hi]}
    fine_probabilities: dict[str, float] = field(default_factory=dict)  # within the headline group, with the prior
    voting: list[str] = field(default_factory=list)  # the features that voted
    fine_without_prior: dict[str, float] = field(default_factory=dict)  # within the group, no prior

    @property
    def label(self) -> str:
        return GROUP_LABELS.get(self.headline, self.headline)

    @property
    def nearest(self) -> str:
        return min(self.distances, key=self.distances.get) if self.distances else \
            max(self.probabilities, key=self.probabilities.get)

    @property
    def nearest_group(self) -> str:
        return group_of(self.nearest)

    def to_dict(self) -> dict:
        out = {"headline": self.headline, "label": self.label, **asdict(self), "nearest": self.nearest}
        if self.groups is None:  # out of range: no probabilities that could be read as an answer
            out["probabilities"] = None
        return out


@dataclass
class Fingerprinter:
    """A fitted nearest-centroid classifier over log-features `feature_names`."""

    feature_names: list[str]
    families: list[str]
    centroids: np.ndarray  # (K, F) in log-feature units
    scale: np.ndarray  # (F,) pooled within-family std of the log-features
    lo: np.ndarray  # (F,) smallest reference log-feature
    hi: np.ndarray
    ranges: dict[str, np.ndarray]  # family -> (2, F) raw min, max
    votes: np.ndarray  # (F,) bool: the features that vote (see feature_drift)
    group_ranges: dict[str, np.ndarray] = field(default_factory=dict)  # group -> (2, F) raw min, max
    temperature: float = 1.0  # of the group probabilities (and of the fine ones: the same softmax)
    unknown_distance: float = math.inf
    range_limit: float = math.inf
    trained_range: tuple[float, float] = (math.nan, math.nan)  # references' TRAINED_FEATURE min, max

    @classmethod
    def fit(cls, refs: list[Reference], feature_names: list[str], votes: np.ndarray | None = None) -> Fingerprinter:
        """Centroids, scales and the voting features; `calibrate` also sets the temperature and the
        unknown limits."""
        X, y = matrix(refs, feature_names), np.array([r.family for r in refs])
        if votes is None:
            drift = feature_drift(refs, feature_names)
            votes = np.array([drift[n]["votes"] for n in feature_names])
        T = _t(X)
        families = sorted({str(k) for k in y})
        centroids = np.stack([np.nanmean(T[y == k], 0) for k in families])
        resid = np.concatenate([T[y == k] - centroids[i] for i, k in enumerate(families)])
        dof = max(1, len(X) - len(families))
        scale = np.maximum(np.sqrt(np.nansum(resid**2, 0) / dof), 1e-3)  # a constant feature
        ranges = {k: np.stack([np.nanmin(X[y == k], 0), np.nanmax(X[y == k], 0)]) for k in families}
        g = np.array([group_of(k) for k in y])
        group_ranges = {str(k): np.stack([np.nanmin(X[g == k], 0), np.nanmax(X[g == k], 0)]) for k in sorted(set(g))}
        return cls(list(feature_names), families, centroids, scale, np.nanmin(T, 0), np.nanmax(T, 0), ranges,
                   np.asarray(votes, bool), group_ranges)

    def z(self, f: np.ndarray) -> np.ndarray:
        return (_t(f)[None, :] - self.centroids) / self.scale[None, :]

    def sq_distances(self, f: np.ndarray) -> np.ndarray:
        """(K,) mean squared standardised distance over the voting features f has."""
        z, ok = self.z(f), ~np.isnan(f) & self.votes
        return np.mean(z[:, ok] ** 2, 1) if ok.any() else np.full(len(self.families), np.inf)

    def excess(self, f: np.ndarray) -> np.ndarray:
        """(F,) how far each voting feature lies outside the references' range, in σ_j (0 inside)."""
        t = _t(f)
        out = np.maximum(0, np.maximum(t - self.hi, self.lo - t)) / self.scale
        return np.where(np.isnan(f) | ~self.votes, 0.0, out)

    def posterior(self, d2: np.ndarray, prior: bool, temperature: float | None = None) -> np.ndarray:
        """(K,) P(family | features): the tempered likelihood times the prior (uniform over groups
        and within each group when `prior` is False)."""
        groups = [group_of(k) for k in self.families]
        present = sorted(set(groups))
        pg = {g: PRIOR_GROUPS.get(g, 0.01) if prior else 1.0 for g in present}
        total = sum(pg.values())
        w = np.empty(len(self.families))
        for i, (k, g) in enumerate(zip(self.families, groups, strict=True)):
            members = [m for m, h in zip(self.families, groups, strict=True) if h == g]
            within = [PRIOR_WITHIN.get(m, 1.0) if prior else 1.0 for m in members]
            w[i] = pg[g] / total * (PRIOR_WITHIN.get(k, 1.0) if prior else 1.0) / sum(within)
        logits = -(d2 - d2.min()) / (2 * (temperature or self.temperature)) + np.log(w)
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def group_probabilities(self, d2: np.ndarray, prior: bool, temperature: float | None = None) -> dict[str, float]:
        p = self.posterior(d2, prior, temperature)
        out: dict[str, float] = {}
        for k, v in zip(self.families, p, strict=True):
            out[group_of(k)] = out.get(group_of(k), 0.0) + float(v)
        return out

    def predict(self, features: dict[str, float], feature_set: str = "", n_deciding: int = 3) -> Prediction:
        f = np.array([features.get(n, math.nan) for n in self.feature_names], dtype=np.float64)
        missing = [n for n, v, ok in zip(self.feature_names, f, self.votes, strict=True) if ok and math.isnan(v)]
        d2 = self.sq_distances(f)
        dist = float(np.sqrt(d2.min()))
        exc = self.excess(f)
        out_of_range = [
            {"feature": n, "value": float(f[j]), "lo": float(np.exp(self.lo[j])), "hi": float(np.exp(self.hi[j])),
             "excess_sigma": float(exc[j])}
            for j, n in sorted(enumerate(self.feature_names), key=lambda jn: -exc[jn[0]]) if exc[j] > 0]
        g, (g_lo, g_hi) = features.get(TRAINED_FEATURE, math.nan), self.trained_range
        if g < g_lo / 4:  # NaN (no norm gains, or no references' figure) never trips it
            out_of_range.insert(0, {"feature": TRAINED_FEATURE, "value": float(g), "lo": g_lo, "hi": g_hi,
                                    "excess_sigma": None, "rule": "below a quarter of the lowest reference"})
        outside = (g < g_lo / 4 or dist > self.unknown_distance or (exc.max() if len(exc) else 0) > self.range_limit
                   or len(missing) > int(self.votes.sum()) // 2)
        fine_p = self.posterior(d2, prior=False)
        groups = None if outside else self.group_probabilities(d2, prior=True)
        groups0 = None if outside else self.group_probabilities(d2, prior=False)
        headline, headline0, prob, fine, within, within0 = "unknown", "unknown", None, None, {}, {}
        if groups is not None and groups0 is not None:
            best, best0 = max(groups, key=groups.get), max(groups0, key=groups0.get)
            if groups[best] >= CONFIDENCE:
                headline, prob = best, groups[best]
            headline0 = best0 if groups0[best0] >= CONFIDENCE else "unknown"
            within = self._within(d2, best, prior=True)
            top = max(within, key=within.get)
            # Decisive only when the weights say so too: with the prior alone AdamW's family would
            # always hold 0.98 of the element-wise group, whatever the weights.
            within0 = self._within(d2, best, prior=False)
            decisive = min(within[top], within0[top]) >= FINE_DECISIVE
            fine = top if headline != "unknown" and decisive else None
        order = np.argsort(d2)
        deciding = [] if outside else self._deciding(f, d2, n_deciding)
        return Prediction(headline, prob, groups, groups0, headline0, fine,
                          "unknown" if outside else self.families[int(order[0])],
                          {k: float(v) for k, v in zip(self.families, fine_p, strict=True)}, dist,
                          self.unknown_distance, feature_set, missing,
                          {k: float(np.sqrt(v)) for k, v in zip(self.families, d2, strict=True)},
                          out_of_range, self.range_limit, deciding, within,
                          [n for n, v in zip(self.feature_names, self.votes, strict=True) if v], within0)

    def _within(self, d2: np.ndarray, group: str, prior: bool) -> dict[str, float]:
        """Each family's share of `group`'s probability."""
        post = self.posterior(d2, prior)
        total = sum(v for k, v in zip(self.families, post, strict=True) if group_of(k) == group)
        return {k: float(v) / total for k, v in zip(self.families, post, strict=True) if group_of(k) == group}

    def _deciding(self, f: np.ndarray, d2: np.ndarray, n: int) -> list[dict]:
        """The voting features that separate the nearest group from the runner-up group most: the
        largest drop in squared standardised distance between each group's nearest family."""
        best: dict[str, int] = {}
        for i in np.argsort(d2):
            best.setdefault(group_of(self.families[int(i)]), int(i))
        if len(best) < 2:
            return []
        (g1, k1), (g2, k2) = list(best.items())[:2]
        z = self.z(f)
        gain = np.where(np.isnan(f) | ~self.votes, -np.inf, z[k2] ** 2 - z[k1] ** 2)
        return [{"feature": self.feature_names[j], "value": float(f[j]), "against": g2,
                 "ranges": {k: [float(r[0, j]), float(r[1, j])] for k, r in self.group_ranges.items()}}
                for j in np.argsort(-gain)[:n] if np.isfinite(gain[j])]


def leave_one_out(refs: list[Reference], feature_names: list[str]) -> dict:
    """Refit without each reference in turn (its voting features chosen without it too) and
    classify it. Returns the fine and headline (group, no prior) accuracies, per-reference
    predictions, the temperature maximising the held-out group log-likelihood (each group weighing
    the same), and the unknown limits from the held-out distances."""
    families = sorted({r.family for r in refs})
    d2 = np.full((len(refs), len(families)), np.inf)
    excess = np.zeros(len(refs))
    clfs = []
    for i in range(len(refs)):
        clf = Fingerprinter.fit([r for j, r in enumerate(refs) if j != i], feature_names)
        f = matrix([refs[i]], feature_names)[0]
        fold = clf.sq_distances(f)
        excess[i] = clf.excess(f).max()
        for k, fam in enumerate(clf.families):
            d2[i, families.index(fam)] = fold[k]
        clfs.append(clf)
    truth = [r.family for r in refs]
    groups = [group_of(t) for t in truth]
    weight = np.array([1 / groups.count(g) for g in groups])
    full = Fingerprinter.fit(refs, feature_names)  # only its family list and the groups matter here
    logliks = []
    for tau in TAUS:
        ll = [math.log(max(full.group_probabilities(d2[i], False, tau)[groups[i]], 1e-300)) for i in range(len(refs))]
        logliks.append(float(np.sum(weight * np.array(ll)) / weight.sum()))
    best = int(np.argmax(logliks))
    pg = [full.group_probabilities(d2[i], False, float(TAUS[best])) for i in range(len(refs))]
    pred = [families[int(k)] for k in d2.argmin(1)]
    head = [max(p, key=p.get) for p in pg]
    nearest = np.sqrt(d2.min(1))
    return {
        "accuracy": float(np.mean([p == t for p, t in zip(pred, truth, strict=True)])), "n": len(refs),
        "headline_accuracy": float(np.mean([h == g for h, g in zip(head, groups, strict=True)])),
        "predictions": pred, "truth": truth, "headline_predictions": head,
        "headline_probability": [float(p[h]) for p, h in zip(pg, head, strict=True)],
        "temperature": float(TAUS[best]), "loglik": logliks[best],
        "unknown_distance": float(1.5 * nearest[np.isfinite(nearest)].max()),
        "range_limit": float(max(1.0, 1.5 * excess.max())),
    }


def calibrate(refs: list[Reference], feature_names: list[str]) -> tuple[Fingerprinter, dict]:
    """Fit on all references, with the temperature and unknown limits from leave-one-out."""
    if len({r.family for r in refs}) < 2:
        raise ValueError("references must cover at least two optimizer families")
    loo = leave_one_out(refs, feature_names)
    clf = Fingerprinter.fit(refs, feature_names)
    clf.temperature, clf.unknown_distance, clf.range_limit = loo["temperature"], loo["unknown_distance"], \
        loo["range_limit"]
    gains = [r.features.get(TRAINED_FEATURE, math.nan) for r in refs]
    if all(math.isfinite(x) for x in gains):
        clf.trained_range = (min(gains), max(gains))
    return clf, loo
