"""Optimizer fingerprint: which optimizer family pretrained this checkpoint, from its weights?

Features, per group of hidden matrices G ∈ {attn_in = q,k,v; o; mlp_in = gate,up; down}, all
ratios so that width, depth, vocabulary and the weights' scale do not decide the answer
(see spectrum.fast_matrix_figures):
    weights      srank (stable rank / r), sv10 and sv50 (quantiles of s/σ_max), colcv and rowcv
                 (spread of column and row norms), kurt (entry kurtosis)
    activations  input sparsity, input Hoyer, output Hoyer (only with `windows`: a token sample)

Classifier (fingerprint_model): nearest centroid on t = log(feature) over the features that do
not drift with training length; the headline is a group of families, "Adam-like (element-wise)" or
"Muon-like (spectral)", with a calibrated probability (with and without a prior for real
checkpoints), or "unknown"; the fine family is secondary. Evaluation (fingerprint_eval): leave-one-
out along every axis the references vary on.

The answer is "unknown" when the model is further from every family than held-out references
were (min_k d_k > 1.5 × the largest leave-one-out nearest distance), when a voting feature lies
outside the references' range by more than 1.5 × the largest leave-one-out excess (in σ_j), when
the model looks untrained (its norm gains are within a quarter of the least-trained reference's
distance from their initial value 1: a random init must not pass for Muon), or when no group
reaches fingerprint_model.CONFIDENCE. An out-of-range answer carries the out-of-range features,
not probabilities; a group answer carries the features that decided it against the other group,
with each group's reference range.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from forgetless.data import prepare_pretraining_data
from forgetless.errors import BadFile, one_line

from . import fingerprint_eval
from .activations import ActivationReport, probe_activations, token_windows
from .fingerprint_eval import ADAM_VS_MUON, by_axis, held_out  # noqa: F401  (re-exported)
from .fingerprint_model import (  # noqa: F401  (re-exported: the fingerprint's public names)
    CONFIDENCE,
    GROUP_LABELS,
    TRAINED_FEATURE,
    Fingerprinter,
    Prediction,
    Reference,
    calibrate,
    feature_drift,
    group_of,
    leave_one_out,
)
from .spectrum import FAST_METRICS, fast_weight_figures

GROUPS = {"attn_in": ("q", "k", "v"), "o": ("o",), "mlp_in": ("gate", "up"), "down": ("down",)}
WEIGHT_FEATURES = [f"{g}_{m}" for g in GROUPS for m in FAST_METRICS]
ACTIVATION_FEATURES = [f"{g}_{m}" for g in GROUPS for m in ("input_sparsity", "input_hoyer", "output_hoyer")]
FEATURE_SETS = {"weights": WEIGHT_FEATURES, "full": WEIGHT_FEATURES + ACTIVATION_FEATURES}
# Not a fingerprint of the optimizer but of training at all: RMS of (gain − 1) over the norm
# layers' gains, exactly 0 at initialisation. Checked one-sided (a model far below every
# reference is untrained: "unknown"); never part of the distance.
REFERENCE_PATH = Path(__file__).with_name("fingerprint_reference.json")


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


def evaluate(refs: list[Reference]) -> dict:
    """The held-out evaluation of `refs` for every feature set (see fingerprint_eval.evaluate)."""
    return fingerprint_eval.evaluate(refs, FEATURE_SETS)


def save_references(refs: list[Reference], path: str | Path, settings: dict | None = None,
                    evaluation: bool = True) -> dict:
    """Write references (features only) + their evaluation as one JSON file. `evaluation=False`:
    features only, for checkpoints kept as test cases (a held-out evaluation needs a calibration set)."""
    doc: dict = {"version": 2, "settings": settings or {}, "references": [asdict(r) for r in refs]}
    if evaluation:
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
    except (ValueError, KeyError, TypeError, RecursionError) as err:  # RecursionError: '[' * 100000  # not JSON, not UTF-8, or not a reference file
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
