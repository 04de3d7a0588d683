"""Analysis of trained models and of sweep results."""

from forgetless.analysis.activations import ActivationProbe as ActivationProbe
from forgetless.analysis.activations import ActivationReport as ActivationReport
from forgetless.analysis.activations import probe_activations as probe_activations
from forgetless.analysis.activations import token_windows as token_windows
from forgetless.analysis.fingerprint import Prediction as Prediction
from forgetless.analysis.fingerprint import Reference as Reference
from forgetless.analysis.fingerprint import model_features as model_features
from forgetless.analysis.memorization import evaluate_blocks as evaluate_blocks
from forgetless.analysis.memorization import greedy_generate as greedy_generate
from forgetless.analysis.memorization_run import MemorizationConfig as MemorizationConfig
from forgetless.analysis.memorization_run import run_memorization as run_memorization
from forgetless.analysis.pareto import (
    best_lr_mask,
    default_reference,
    dominated_share,
    forgetting_at_learning,
    hypervolume,
    learning_within_forgetting,
    pareto_mask,
    pareto_set,
    robust_frontier,
    robust_mask,
)
from forgetless.analysis.spectrum import MatrixSpectrum as MatrixSpectrum
from forgetless.analysis.spectrum import summarize_spectra as summarize_spectra
from forgetless.analysis.spectrum import weight_spectra as weight_spectra

__all__ = [
    "best_lr_mask",
    "default_reference",
    "dominated_share",
    "forgetting_at_learning",
    "hypervolume",
    "learning_within_forgetting",
    "pareto_mask",
    "pareto_set",
    "robust_frontier",
    "robust_mask",
]
