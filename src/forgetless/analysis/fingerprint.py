"""Optimizer fingerprint: which optimizer family pretrained this checkpoint?

Features (all scale-free, so width and depth do not decide the answer), per group of hidden
matrices G ∈ {attn_in = q,k,v; o; mlp_in = gate,up; down}:
    spectrum    mean stable rank / r, effective rank / r, singular density  (r = min(d_out, d_in))
    activations input sparsity, input Hoyer, output Hoyer (pooled over the group's modules)

Classifier: diagonal-Gaussian nearest centroid. Features are standardised by the pooled
within-family standard deviation σ_j of the calibration set; the distance of feature vector f to
family k is the RMS over features, d_k = sqrt(mean_j ((f_j − c_kj) / σ_j)²), and

    P(k | f) = softmax_k(−d_k² / (2τ)),

with the temperature τ chosen to maximise the leave-one-out log-likelihood of the calibration set
(so the probabilities are as confident as held-out references justify, no more). The answer is
"unknown" when min_k d_k exceeds `unknown_distance` = 1.5 × the largest leave-one-out distance of
a calibration model to its nearest centroid: further from every family than any reference was.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from .activations import ActivationReport, probe_activations
from .spectrum import MatrixSpectrum, weight_spectra

GROUPS = {"attn_in": ("q", "k", "v"), "o": ("o",), "mlp_in": ("gate", "up"), "down": ("down",)}
SPECTRUM_FEATURES = [
    f"{g}_{m}" for g in GROUPS for m in ("stable_rank_ratio", "effective_rank_ratio", "density")
]
ACTIVATION_FEATURES = [f"{g}_{m}" for g in GROUPS for m in ("input_sparsity", "input_hoyer", "output_hoyer")]
FEATURE_SETS = {"spectrum": SPECTRUM_FEATURES, "full": SPECTRUM_FEATURES + ACTIVATION_FEATURES}
REFERENCE_PATH = Path(__file__).with_name("fingerprint_reference.json")
TAUS = np.logspace(-2, 2, 41)


def spectrum_features(spectra: list[MatrixSpectrum]) -> dict[str, float]:
    """Group means of the scale-free spectrum figures (NaN for a group the model lacks)."""
    out = {}
    for group, kinds in GROUPS.items():
        items = [m for m in spectra if m.kind in kinds]
        for metric in ("stable_rank_ratio", "effective_rank_ratio", "density"):
            vals = [getattr(m, metric) for m in items if not math.isnan(getattr(m, metric))]
            out[f"{group}_{metric}"] = float(np.mean(vals)) if vals else math.nan
    return out


def activation_features(report: ActivationReport) -> dict[str, float]:
    """Group means (equal weight per kind present) of the activation figures."""
    by_kind = report.by_kind()
    out = {}
    for group, kinds in GROUPS.items():
        for metric in ("input_sparsity", "input_hoyer", "output_hoyer"):
            vals = [by_kind[k][metric] for k in kinds if k in by_kind and not math.isnan(by_kind[k][metric])]
            out[f"{group}_{metric}"] = float(np.mean(vals)) if vals else math.nan
    return out


def model_features(model: nn.Module, windows=None, batch_size: int = 8, threshold: float = 0.01) -> dict[str, float]:
    """Spectrum features, plus activation features when a token sample `windows` (n, T) is given."""
    feats = spectrum_features(weight_spectra(model))
    if windows is not None:
        feats.update(activation_features(probe_activations(model, windows, batch_size, threshold)))
    return feats


@dataclass
class Prediction:
    family: str  # the most probable family, or "unknown"
    probabilities: dict[str, float]
    distance: float  # RMS standardised distance to the nearest family centroid
    unknown_distance: float
    feature_set: str
    missing: list[str] = field(default_factory=list)

    @property
    def nearest(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


@dataclass
class Fingerprinter:
    """A fitted nearest-centroid classifier over `feature_names` (see module docstring)."""

    feature_names: list[str]
    families: list[str]
    centroids: np.ndarray  # (K, F) in raw feature units
    scale: np.ndarray  # (F,) pooled within-family std
    temperature: float = 1.0
    unknown_distance: float = math.inf

    @classmethod
    def fit(cls, X: np.ndarray, y: list[str], feature_names: list[str]) -> Fingerprinter:
        """Centroids and scales only; `calibrate` also sets temperature and unknown distance."""
        families = sorted(set(y))
        y_arr = np.asarray(y)
        centroids = np.stack([np.nanmean(X[y_arr == k], 0) for k in families])
        resid = np.concatenate([X[y_arr == k] - centroids[i] for i, k in enumerate(families)])
        dof = max(1, len(X) - len(families))
        scale = np.sqrt(np.nansum(resid**2, 0) / dof)
        scale = np.maximum(scale, 1e-3 * np.abs(np.nanmean(X, 0)) + 1e-6)  # a constant feature
        return cls(list(feature_names), families, centroids, scale)

    def sq_distances(self, f: np.ndarray) -> np.ndarray:
        """(K,) mean squared standardised distance over the features f has (NaN ones skipped)."""
        z = (f[None, :] - self.centroids) / self.scale[None, :]
        ok = ~np.isnan(f)
        return np.mean(z[:, ok] ** 2, 1) if ok.any() else np.full(len(self.families), np.inf)

    def probabilities(self, d2: np.ndarray, temperature: float | None = None) -> np.ndarray:
        logits = -d2 / (2 * (temperature or self.temperature))
        logits = logits - logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def predict(self, features: dict[str, float], feature_set: str = "") -> Prediction:
        f = np.array([features.get(n, math.nan) for n in self.feature_names], dtype=np.float64)
        missing = [n for n, v in zip(self.feature_names, f, strict=True) if math.isnan(v)]
        d2 = self.sq_distances(f)
        p = self.probabilities(d2)
        dist = float(np.sqrt(d2.min()))
        unknown = dist > self.unknown_distance or len(missing) > len(f) // 2
        family = "unknown" if unknown else self.families[int(p.argmax())]
        probs = {k: float(v) for k, v in zip(self.families, p, strict=True)}
        return Prediction(family, probs, dist, self.unknown_distance, feature_set, missing)

    def to_dict(self) -> dict:
        return {"feature_names": self.feature_names, "families": self.families,
                "centroids": self.centroids.tolist(), "scale": self.scale.tolist(),
                "temperature": self.temperature, "unknown_distance": self.unknown_distance}


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


def _matrix(refs: list[Reference], names: list[str]) -> np.ndarray:
    return np.array([[r.features.get(n, math.nan) for n in names] for r in refs], dtype=np.float64)


def leave_one_out(refs: list[Reference], feature_names: list[str]) -> dict:
    """Refit without each reference in turn and classify it. Returns accuracy, per-reference
    predictions, squared distances (n, K) over all families (inf where a family had no other
    member), and the fitted temperature / unknown distance derived from them."""
    X, y = _matrix(refs, feature_names), [r.family for r in refs]
    families = sorted(set(y))
    d2 = np.full((len(refs), len(families)), np.inf)
    for i in range(len(refs)):
        keep = [j for j in range(len(refs)) if j != i]
        clf = Fingerprinter.fit(X[keep], [y[j] for j in keep], feature_names)
        fold = clf.sq_distances(X[i])
        for k, fam in enumerate(clf.families):
            d2[i, families.index(fam)] = fold[k]
    truth = np.array([families.index(t) for t in y])
    pred = d2.argmin(1)
    # Temperature: maximise the held-out log-likelihood of the true family.
    logliks = []
    for tau in TAUS:
        logits = -d2 / (2 * tau)
        logits = logits - logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        logliks.append(float(np.mean(logp[np.arange(len(refs)), truth])))
    best = int(np.argmax(logliks))
    nearest = np.sqrt(d2.min(1))
    return {
        "accuracy": float(np.mean(pred == truth)),
        "n": len(refs),
        "predictions": [families[k] for k in pred],
        "truth": y,
        "temperature": float(TAUS[best]),
        "loglik": logliks[best],
        "unknown_distance": float(1.5 * nearest[np.isfinite(nearest)].max()),
    }


def calibrate(refs: list[Reference], feature_names: list[str]) -> tuple[Fingerprinter, dict]:
    """Fit on all references, with temperature and unknown distance from leave-one-out."""
    if len({r.family for r in refs}) < 2:
        raise ValueError("references must cover at least two optimizer families")
    loo = leave_one_out(refs, feature_names)
    clf = Fingerprinter.fit(_matrix(refs, feature_names), [r.family for r in refs], feature_names)
    clf.temperature, clf.unknown_distance = loo["temperature"], loo["unknown_distance"]
    return clf, loo


def held_out_accuracy(refs: list[Reference], feature_names: list[str], held_out_preset: str) -> dict:
    """Calibrate on every preset but `held_out_preset`, classify that preset's references."""
    train = [r for r in refs if r.preset != held_out_preset]
    test = [r for r in refs if r.preset == held_out_preset]
    if not test or not train:
        raise ValueError(f"held_out_preset {held_out_preset!r} must split the references; "
                         f"presets present: {sorted({r.preset for r in refs})}")
    clf, _ = calibrate(train, feature_names)
    preds = [clf.predict(r.features) for r in test]
    return {"preset": held_out_preset, "n": len(test),
            "accuracy": float(np.mean([p.nearest == r.family for p, r in zip(preds, test, strict=True)])),
            "unknown": sum(p.family == "unknown" for p in preds),
            "predictions": [p.nearest for p in preds], "truth": [r.family for r in test]}


def save_references(refs: list[Reference], path: str | Path, settings: dict | None = None) -> dict:
    """Write references + their leave-one-out / held-out-size evaluations as one JSON file."""
    doc: dict = {"version": 1, "settings": settings or {}, "references": [asdict(r) for r in refs]}
    doc["evaluation"] = evaluate(refs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, allow_nan=True))
    return doc


def evaluate(refs: list[Reference]) -> dict:
    out: dict = {}
    presets = sorted({r.preset for r in refs})
    for set_name, names in FEATURE_SETS.items():
        if not all(np.isfinite(_matrix(refs, names)).all(1)):
            continue  # this feature set was not measured on every reference
        res = {"loo": leave_one_out(refs, names)}
        if len(presets) > 1:
            res["held_out"] = [held_out_accuracy(refs, names, p) for p in presets]
        out[set_name] = res
    return out


def load_references(path: str | Path | None = None) -> tuple[list[Reference], dict]:
    path = Path(path) if path else REFERENCE_PATH
    if not path.exists():
        raise FileNotFoundError(f"no fingerprint reference at {path}; fit one with "
                                "`forgetless fingerprint --calibrate --out PATH`")
    doc = json.loads(path.read_text())
    return [Reference(**r) for r in doc["references"]], doc


def fingerprint(features: dict[str, float], path: str | Path | None = None) -> Prediction:
    """Classify a checkpoint's features against the shipped (or given) reference set; uses the
    activation features when present, the spectrum-only classifier otherwise."""
    refs, _ = load_references(path)
    has_acts = all(not math.isnan(features.get(n, math.nan)) for n in ACTIVATION_FEATURES)
    set_name = "full" if has_acts and all(set(ACTIVATION_FEATURES) <= set(r.features) for r in refs) else "spectrum"
    clf, _ = calibrate(refs, FEATURE_SETS[set_name])
    return clf.predict(features, set_name)


def fingerprint_checkpoint(checkpoint: str, corpus: str = "stdlib", reference: str | Path | None = None,
                           activations: bool = True, device: str = "cpu",
                           tokens: int | None = None) -> Prediction:
    """Load `checkpoint` (a folder or hub name) and classify it; the activation sample is drawn as
    the references' was (same token budget and window length) from `corpus`'s validation split,
    tokenised by the checkpoint's own tokenizer."""
    from forgetless.data import prepare_pretraining_data
    from forgetless.models import load_model, resolve_checkpoint

    from .activations import token_windows

    model, _ = load_model(checkpoint)
    model = model.to(device).eval()
    windows = None
    if activations:
        settings = load_references(reference)[1].get("settings", {})
        data = prepare_pretraining_data(corpus, tokenizer=resolve_checkpoint(checkpoint), progress=False)
        windows = token_windows(data.val, tokens or settings.get("probe_tokens", 4096),
                                settings.get("seq_len", 64))
    return fingerprint(model_features(model, windows), reference)
