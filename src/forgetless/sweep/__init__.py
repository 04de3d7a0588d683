"""Studies: learning-rate sweeps over methods and optimizers, a results store, frontiers.

    from forgetless.sweep import load_study, run_sweep, Store
    study = load_study("quick")                 # a YAML file or a preset name
    run_sweep(study, workers=2)                 # resumable; safe to run twice at once
    Store("runs/quick/results.sqlite").points(study="quick")

See docs/sweep.md.
"""

from forgetless.sweep.runner import STORE_NAME, run_sweep, store_path
from forgetless.sweep.store import SCHEMA_VERSION, Store, StoreVersionError
from forgetless.sweep.study import Study, StudyError, cell_id, expand, load_study, preset_names


def __getattr__(name: str):
    # The frontier helpers import forgetless.analysis (and with it torch and transformers);
    # loading them on first use keeps `import forgetless.sweep` light for worker processes.
    if name in ("Panel", "panels", "summarize"):
        from forgetless.sweep import frontier

        return getattr(frontier, name)
    raise AttributeError(f"module 'forgetless.sweep' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION", "STORE_NAME", "Panel", "Store", "StoreVersionError", "Study", "StudyError",
    "cell_id", "expand", "load_study", "panels", "preset_names", "run_sweep", "store_path", "summarize",
]
