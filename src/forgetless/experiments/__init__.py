"""Experiment runners that sit above the sweep (docs/ARCHITECTURE.md): the memorisation test
(`forgetless.experiments.memorization`: run_memorization, train_one). `forgetless reproduce`
(forgetless.report.reproduce) runs it for a study whose `reproduce.memorization` field is set.
"""

from forgetless.lazy import lazy_package

__all__ = lazy_package(__name__, {"run_memorization": "memorization", "train_one": "memorization"})
