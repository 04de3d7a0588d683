"""Studies: learning-rate sweeps over methods and optimizers, and a results store.

    from forgetless.sweep import load_study, run_sweep, Store
    study = load_study("quick")                 # a YAML file or a preset name
    run_sweep(study, workers=2)                 # resumable; safe to run twice at once
    Store("runs/quick/results.sqlite").points(study="quick")

Frontiers of a study's points: forgetless.analysis.frontier (panels, summarize, plot).

See docs/sweep.md.
"""

from forgetless.sweep.runner import STORE_NAME, run_sweep, store_path
from forgetless.sweep.store import SCHEMA_VERSION, Store, StoreVersionError
from forgetless.sweep.study import Study, StudyError, cell_id, expand, load_study, preset_names

__all__ = [
    "SCHEMA_VERSION", "STORE_NAME", "Store", "StoreVersionError", "Study", "StudyError",
    "cell_id", "expand", "load_study", "preset_names", "run_sweep", "store_path",
]
