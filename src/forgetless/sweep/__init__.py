"""Studies: learning-rate sweeps over methods and optimizers, and a results store.

    from forgetless.sweep import load_study, run_sweep, Store
    study = load_study("quick")                 # a YAML file or a preset name
    run_sweep(study, workers=2)                 # resumable; safe to run twice at once
    Store("runs/quick/results.sqlite").eval_points(study="quick")  # typed EvalPoint records

Frontiers of a study's points: forgetless.analysis.frontier (panels, summarize, plot).

See docs/sweep.md. Each name below is imported from its module when first used (forgetless.lazy).
"""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "STORE_NAME": "runner", "run_sweep": "runner", "store_path": "runner",
    "SCHEMA_VERSION": "store", "Store": "store", "StoreVersionError": "store",
    "Study": "study", "StudyError": "study", "cell_id": "study", "expand": "study",
    "load_study": "study", "preset_names": "study",
})
