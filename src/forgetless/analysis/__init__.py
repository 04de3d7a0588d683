"""Analysis of trained models and of sweep results.

Importing the package is cheap (numpy only): the Pareto maths and the frontier panels are
re-exported here; the modules that need torch and transformers are imported by name where they
are used:

    forgetless.analysis.activations     ActivationProbe, probe_activations, token_windows
    forgetless.analysis.spectrum        weight_spectra, summarize_spectra, MatrixSpectrum
    forgetless.analysis.fingerprint     model_features, Prediction, Reference
    forgetless.analysis.memorization    evaluate_blocks, greedy_generate
    forgetless.analysis.memorization_run  MemorizationConfig, run_memorization
"""

from forgetless.analysis.frontier import Panel, panels, summarize
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

__all__ = [
    "Panel",
    "best_lr_mask",
    "default_reference",
    "dominated_share",
    "forgetting_at_learning",
    "hypervolume",
    "learning_within_forgetting",
    "panels",
    "pareto_mask",
    "pareto_set",
    "robust_frontier",
    "robust_mask",
    "summarize",
]
