"""Analysis of trained models and of sweep results.

The Pareto maths and the frontier panels (numpy only) are exported here, each imported from its
module when first used (forgetless.lazy); the modules that need torch and transformers are
imported by name where they are used:

    forgetless.analysis.activations     ActivationProbe, probe_activations, token_windows
    forgetless.analysis.spectrum        weight_spectra, summarize_spectra, MatrixSpectrum
    forgetless.analysis.fingerprint     model_features, Prediction, Reference
    forgetless.analysis.memorization    evaluate_blocks, greedy_generate
    forgetless.analysis.memorization_run  matched_loss_points, table3 (the runner: forgetless.experiments)
"""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "Panel": "frontier", "panels": "frontier", "summarize": "frontier",
    "best_lr_mask": "pareto", "default_reference": "pareto", "dominated_share": "pareto",
    "forgetting_at_learning": "pareto", "hypervolume": "pareto", "learning_within_forgetting": "pareto",
    "pareto_mask": "pareto", "pareto_set": "pareto", "robust_frontier": "pareto", "robust_mask": "pareto",
})
