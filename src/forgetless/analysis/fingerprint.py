"""Optimizer fingerprint: which optimizer family pretrained this checkpoint, from its weights?

Features, per group of hidden matrices G ∈ {attn_in = q,k,v; o; mlp_in = gate,up; down}, all
ratios so that width, depth, vocabulary and the weights' scale do not decide the answer
(see spectrum.fast_matrix_figures):
    weights      srank (stable rank / r), sv10 and sv50 (quantiles of s/σ_max), colcv and rowcv
                 (spread of column and row norms), kurt (entry kurtosis)
    activations  input sparsity, input Hoyer, output Hoyer (only with `windows`: a token sample)

Classifier: diagonal-Gaussian nearest centroid on t = log(feature). t is standardised by the
pooled within-family standard deviation σ_j of the calibration set; the distance of t to family k
is d_k = sqrt(mean_j ((t_j − c_kj) / σ_j)²), and P(k | t) = softmax_k(−d_k² / (2τ)), with τ
maximising the leave-one-out log-likelihood of the calibration set.

The answer is "unknown" when the model is further from every family than held-out references
were (min_k d_k > 1.5 × the largest leave-one-out nearest distance), when a feature lies
outside the references' range by more than 1.5 × the largest leave-one-out excess (in σ_j), or
when the model looks untrained (its norm gains are within a quarter of the least-trained
reference's distance from their initial value 1: a random init must not pass for Muon). An
unknown answer carries the out-of-range features, not probabilities; a family answer carries the
features that decided it against the runner-up, with each family's reference range.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from forgetless.data import prepare_pretraining_data
from forgetless.errors import BadFile, one_line

from .activations import ActivationReport, probe_activations, token_windows
from .spectrum import FAST_METRICS, fast_weight_figures

GROUPS = {"attn_in": ("q", "k", "v"), "o": ("o",), "mlp_in": ("gate", "up"), "down": ("down",)}
WEIGHT_FEATURES = [f"{g}_{m}" for g in GROUPS for m in FAST_METRICS]
ACTIVATION_FEATURES = [f"{g}_{m}" for g in GROUPS for m in ("input_sparsity", "input_hoyer", "output_hoyer")]
FEATURE_SETS = {"weights": WEIGHT_FEATURES, "full": WEIGHT_FEATURES + ACTIVATION_FEATURES}
# Not a fingerprint of the optimizer but of training at all: RMS of (gain − 1) over the norm
# layers' gains, exactly 0 at initialisation. Checked one-sided (a model far below every
# reference is untrained: "unknown"); never part of the distance.
TRAINED_FEATURE = "norm_gain_dev"
REFERENCE_PATH = Path(__file__).with_name("fingerprint_reference.json")
TAUS = np.logspace(-2, 2, 41)
FLOOR = 1e-4  # log(max(x, FLOOR)): sparsities can be exactly 0


def weight_features(model: nn.Module, spectrum_layers: int = 8) -> dict[str, float]:
    """Group means of the fast weight figures (NaN for a group the model lacks)."""
    figs = fast_weight_figures(model, spectrum_layers)
    out = {}
    for group, kinds in GROUPS.items():
        for metric in FAST_METRICS:
            vals = [f[metric] for kind, _, f in figs if kind in kinds and not math.isnan(f[metric])]
            out[f"{group}_{metric}"] = float(np.mean(vals)) if vals else math.nan
    gains = [p.detach().float().flatten() for n, p in model.named_parameters()
             if p.ndim == 1 and n.endswith("weight") and ("norm" in n or ".ln_" in n)]
    out[TRAINED_FEATURE] = float(torch.cat(gains).sub(1).square().mean().sqrt()) if gains else math.nan
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
    """Weight features, plus activation features when a token sample `windows` (n, T) is given."""
    feats = weight_features(model)
    if windows is not None:
        feats.update(activation_features(probe_activations(model, windows, batch_size, threshold)))
    return feats


def _t(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, FLOOR))


@dataclass
class Prediction:
    family: str  # the most probable family, or "unknown"
    probabilities: dict[str, float]  # kept for the record; not an answer when family is "unknown"
    distance: float  # RMS standardised distance to the nearest family centroid
    unknown_distance: float
    feature_set: str
    missing: list[str] = field(default_factory=list)
    distances: dict[str, float] = field(default_factory=dict)  # to every family's centroid
    out_of_range: list[dict] = field(default_factory=list)  # feature, value, lo, hi, excess_sigma
    range_limit: float = math.inf
    deciding: list[dict] = field(default_factory=list)  # feature, value, ranges {family: [lo, hi]}

    @property
    def nearest(self) -> str:
        return min(self.distances, key=self.distances.get) if self.distances else \
            max(self.probabilities, key=self.probabilities.get)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["nearest"] = self.nearest
        if self.family == "unknown":  # no probabilities that could be read as an answer
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
    temperature: float = 1.0
    unknown_distance: float = math.inf
    range_limit: float = math.inf
    trained_range: tuple[float, float] = (math.nan, math.nan)  # references' TRAINED_FEATURE min, max

    @classmethod
    def fit(cls, X: np.ndarray, y: list[str], feature_names: list[str]) -> Fingerprinter:
        """Centroids and scales only; `calibrate` also sets temperature and unknown limits."""
        T = _t(X)
        families = sorted(set(y))
        y_arr = np.asarray(y)
        centroids = np.stack([np.nanmean(T[y_arr == k], 0) for k in families])
        resid = np.concatenate([T[y_arr == k] - centroids[i] for i, k in enumerate(families)])
        dof = max(1, len(X) - len(families))
        scale = np.maximum(np.sqrt(np.nansum(resid**2, 0) / dof), 1e-3)  # a constant feature
        ranges = {k: np.stack([np.nanmin(X[y_arr == k], 0), np.nanmax(X[y_arr == k], 0)]) for k in families}
        return cls(list(feature_names), families, centroids, scale, np.nanmin(T, 0), np.nanmax(T, 0), ranges)

    def z(self, f: np.ndarray) -> np.ndarray:
        return (_t(f)[None, :] - self.centroids) / self.scale[None, :]

    def sq_distances(self, f: np.ndarray) -> np.ndarray:
        """(K,) mean squared standardised distance over the features f has (NaN ones skipped)."""
        z, ok = self.z(f), ~np.isnan(f)
        return np.mean(z[:, ok] ** 2, 1) if ok.any() else np.full(len(self.families), np.inf)

    def excess(self, f: np.ndarray) -> np.ndarray:
        """(F,) how far each feature lies outside the references' range, in σ_j (0 inside)."""
        t = _t(f)
        out = np.maximum(0, np.maximum(t - self.hi, self.lo - t)) / self.scale
        return np.where(np.isnan(f), 0.0, out)

    def probabilities(self, d2: np.ndarray, temperature: float | None = None) -> np.ndarray:
        logits = -d2 / (2 * (temperature or self.temperature))
        logits = logits - logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def predict(self, features: dict[str, float], feature_set: str = "", n_deciding: int = 3) -> Prediction:
        f = np.array([features.get(n, math.nan) for n in self.feature_names], dtype=np.float64)
        missing = [n for n, v in zip(self.feature_names, f, strict=True) if math.isnan(v)]
        d2 = self.sq_distances(f)
        p = self.probabilities(d2)
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
        unknown = (g < g_lo / 4 or dist > self.unknown_distance or (exc.max() if len(exc) else 0) > self.range_limit
                   or len(missing) > len(f) // 2)
        order = np.argsort(d2)
        family = "unknown" if unknown else self.families[int(order[0])]
        deciding = []
        if not unknown and len(order) > 1:
            z = self.z(f)
            gain = np.where(np.isnan(f), -np.inf, z[order[1]] ** 2 - z[order[0]] ** 2)
            for j in np.argsort(-gain)[:n_deciding]:
                deciding.append({"feature": self.feature_names[j], "value": float(f[j]),
                                 "against": self.families[int(order[1])],
                                 "ranges": {k: [float(r[0, j]), float(r[1, j])] for k, r in self.ranges.items()}})
        return Prediction(family, {k: float(v) for k, v in zip(self.families, p, strict=True)}, dist,
                          self.unknown_distance, feature_set, missing,
                          {k: float(np.sqrt(v)) for k, v in zip(self.families, d2, strict=True)},
                          out_of_range, self.range_limit, deciding)


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


def _matrix(refs: list[Reference], names: list[str]) -> np.ndarray:
    return np.array([[r.features.get(n, math.nan) for n in names] for r in refs], dtype=np.float64)


def leave_one_out(refs: list[Reference], feature_names: list[str]) -> dict:
    """Refit without each reference in turn and classify it. Returns accuracy, per-reference
    predictions, and the temperature / unknown limits derived from the held-out distances."""
    X, y = _matrix(refs, feature_names), [r.family for r in refs]
    families = sorted(set(y))
    d2 = np.full((len(refs), len(families)), np.inf)
    excess = np.zeros(len(refs))
    for i in range(len(refs)):
        keep = [j for j in range(len(refs)) if j != i]
        clf = Fingerprinter.fit(X[keep], [y[j] for j in keep], feature_names)
        fold = clf.sq_distances(X[i])
        excess[i] = clf.excess(X[i]).max()
        for k, fam in enumerate(clf.families):
            d2[i, families.index(fam)] = fold[k]
    truth = np.array([families.index(t) for t in y])
    pred = d2.argmin(1)
    logliks = []  # temperature: maximise the held-out log-likelihood of the true family
    for tau in TAUS:
        logits = -d2 / (2 * tau)
        logits = logits - logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        logliks.append(float(np.mean(logp[np.arange(len(refs)), truth])))
    best = int(np.argmax(logliks))
    nearest = np.sqrt(d2.min(1))
    return {
        "accuracy": float(np.mean(pred == truth)), "n": len(refs),
        "predictions": [families[k] for k in pred], "truth": y,
        "temperature": float(TAUS[best]), "loglik": logliks[best],
        "unknown_distance": float(1.5 * nearest[np.isfinite(nearest)].max()),
        "range_limit": float(max(1.0, 1.5 * excess.max())),
    }


def calibrate(refs: list[Reference], feature_names: list[str]) -> tuple[Fingerprinter, dict]:
    """Fit on all references, with temperature and unknown limits from leave-one-out."""
    if len({r.family for r in refs}) < 2:
        raise ValueError("references must cover at least two optimizer families")
    loo = leave_one_out(refs, feature_names)
    clf = Fingerprinter.fit(_matrix(refs, feature_names), [r.family for r in refs], feature_names)
    clf.temperature, clf.unknown_distance, clf.range_limit = loo["temperature"], loo["unknown_distance"], \
        loo["range_limit"]
    gains = [r.features.get(TRAINED_FEATURE, math.nan) for r in refs]
    if all(math.isfinite(x) for x in gains):
        clf.trained_range = (min(gains), max(gains))
    return clf, loo


def held_out(refs: list[Reference], feature_names: list[str], key: str,
             families: tuple[str, ...] | None = None) -> dict:
    """Leave-one-`key`-out (key: "preset" = size, "steps" = training length): for each value,
    calibrate on the references without it and classify those with it. `families` restricts
    both sides to those families (e.g. the Adam-like and Muon ones)."""
    if families is not None:
        refs = [r for r in refs if r.family in families]
    values = sorted({getattr(r, key) for r in refs})
    if len(values) < 2:
        return {"key": key, "n": 0, "folds": []}
    truth, pred, folds, unknown = [], [], [], 0
    for v in values:
        train = [r for r in refs if getattr(r, key) != v]
        test = [r for r in refs if getattr(r, key) == v]
        if len({r.family for r in train}) < 2:
            continue
        clf, _ = calibrate(train, feature_names)
        preds = [clf.predict(r.features) for r in test]
        right = sum(p.nearest == r.family for p, r in zip(preds, test, strict=True))
        unk = sum(p.family == "unknown" for p in preds)
        folds.append({"held_out": v, "n": len(test), "right": right, "unknown": unk})
        truth += [r.family for r in test]
        pred += [p.nearest for p in preds]
        unknown += unk
    n = len(truth)
    fams = sorted(set(truth) | set(pred))
    confusion = {t: {p: sum(a == t and b == p for a, b in zip(truth, pred, strict=True)) for p in fams}
                 for t in fams}
    return {"key": key, "n": n, "right": sum(a == b for a, b in zip(truth, pred, strict=True)),
            "accuracy": (sum(a == b for a, b in zip(truth, pred, strict=True)) / n) if n else math.nan,
            "unknown": unknown, "folds": folds, "confusion": confusion}


ADAM_VS_MUON = ("l1->linf", "l2->l2")


def evaluate(refs: list[Reference]) -> dict:
    """Leave-one-out, leave-one-size-out, leave-one-length-out (all families, and Adam-like vs
    Muon only), per feature set measured on every reference."""
    out: dict = {}
    for set_name, names in FEATURE_SETS.items():
        if not np.isfinite(_matrix(refs, names)).all():
            continue  # this feature set was not measured on every reference
        out[set_name] = {"loo": leave_one_out(refs, names),
                         "size": held_out(refs, names, "preset"), "length": held_out(refs, names, "steps"),
                         "size_adam_muon": held_out(refs, names, "preset", ADAM_VS_MUON),
                         "length_adam_muon": held_out(refs, names, "steps", ADAM_VS_MUON)}
    return out


def save_references(refs: list[Reference], path: str | Path, settings: dict | None = None) -> dict:
    """Write references (features only) + their evaluation as one JSON file."""
    doc: dict = {"version": 2, "settings": settings or {}, "references": [asdict(r) for r in refs]}
    doc["evaluation"] = evaluate(refs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, allow_nan=True))
    return doc


def load_references(path: str | Path | None = None) -> tuple[list[Reference], dict]:
    path = Path(path) if path else REFERENCE_PATH
    if not path.exists():
        raise BadFile(f"no fingerprint reference at {path}; make one with "
                      "benchmarks/fingerprint_references.py or `forgetless fingerprint --calibrate`")
    try:
        doc = json.loads(path.read_text())
        return [Reference(**r) for r in doc["references"]], doc
    except (ValueError, KeyError, TypeError) as err:  # not JSON, not UTF-8, or not a reference file
        raise BadFile(f"{path} is not a fingerprint reference file ({one_line(err)})") from None


def fingerprint(features: dict[str, float], path: str | Path | None = None) -> Prediction:
    """Classify a checkpoint's features against the shipped (or given) reference set; uses the
    activation features when present (and measured on the references), the weights otherwise."""
    refs, _ = load_references(path)
    has_acts = all(not math.isnan(features.get(n, math.nan)) for n in ACTIVATION_FEATURES)
    refs_acts = all(not math.isnan(r.features.get(n, math.nan)) for r in refs for n in ACTIVATION_FEATURES)
    set_name = "full" if has_acts and refs_acts else "weights"
    clf, _ = calibrate(refs, FEATURE_SETS[set_name])
    return clf.predict(features, set_name)


def _load_weights(checkpoint: str, float32: bool = False) -> nn.Module:
    """The model alone, in its stored dtype (bf16 stays bf16: half the memory, and the features
    cast each matrix to float32 anyway); no tokenizer needed for the weights-only path."""
    import transformers

    from forgetless.models import load_model, resolve_checkpoint
    from forgetless.models.loading import quiet

    source = resolve_checkpoint(checkpoint)  # missing / corrupt weight files are refused here
    is_adapter = (Path(source) / "adapter_config.json").is_file() and not (Path(source) / "config.json").is_file()
    if float32 or is_adapter:
        return load_model(checkpoint)[0]
    with quiet():
        return transformers.AutoModelForCausalLM.from_pretrained(source, dtype="auto", trust_remote_code=False)


def fingerprint_checkpoint(checkpoint: str, corpus: str = "stdlib", reference: str | Path | None = None,
                           activations: bool = False, device: str = "cpu",
                           tokens: int | None = None) -> Prediction:
    """Load `checkpoint` (a folder or hub name) and classify it from its weights; with
    `activations`, also from a token sample (≤ 16k tokens, default the references' budget) of
    `corpus`'s validation split, tokenised by the checkpoint's own tokenizer."""
    from forgetless.models import resolve_checkpoint

    model = _load_weights(checkpoint, float32=activations).to(device).eval()
    windows = None
    if activations:
        settings = load_references(reference)[1].get("settings", {})
        n = min(tokens or settings.get("probe_tokens", 4096), 16384)
        data = prepare_pretraining_data(corpus, tokenizer=resolve_checkpoint(checkpoint), progress=False)
        windows = token_windows(data.val, n, settings.get("seq_len", 64))
    return fingerprint(model_features(model, windows), reference)
