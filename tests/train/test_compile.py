"""compile: true trains the same model as eager mode (equal train losses and forgetting, on CPU),
and inductor's kernel cache lives under the forgetless cache unless the user chose a directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest
import torch

from forgetless.train import PretrainConfig, pretrain, runtime

# One layer, three steps: inductor's first compile (C++ kernels built with the system compiler,
# ~45 s on a busy 2-core machine, ~3 s from a warm cache) is nearly all of this test's time.
SHORT = dict(steps=3, eval_every=3, log_every=1, model_overrides={"num_hidden_layers": 1})


def _losses(out: Path) -> tuple[dict[int, float], dict[int, float]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return ({p["step"]: p["loss"] for p in lines if p["kind"] == "train"},
            {p["step"]: p["forgetting"] for p in lines if p["kind"] == "eval"})


def test_compiled_run_matches_eager(corpus_dir, tmp_path, tiny) -> None:
    common = dict(**tiny, **SHORT, corpus=str(corpus_dir), optimizer="adamw")
    eager = pretrain(PretrainConfig(**common, out_dir=tmp_path / "eager"))
    torch._dynamo.reset()  # a fresh compile, whatever earlier tests compiled
    torch._dynamo.utils.counters.clear()
    try:
        compiled = pretrain(PretrainConfig(**common, compile=True, out_dir=tmp_path / "compiled"))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    finally:
        torch._dynamo.reset()
    assert eager.status == compiled.status == "done"
    train_e, forget_e = _losses(tmp_path / "eager")
    train_c, forget_c = _losses(tmp_path / "compiled")
    assert sorted(train_e) == [1, 2, 3] and sorted(forget_e) == [0, 3]
    assert train_c == pytest.approx(train_e, rel=1e-4)
    assert forget_c == pytest.approx(forget_e, rel=1e-4)
    assert forget_e[3] < forget_e[0] - 0.1  # it trained: a change the tolerance could not hide


def test_inductor_cache_lives_under_forgetless_cache(tmp_path) -> None:
    # Importing torch._dynamo (transformers does, so forgetless.train does) already set
    # TORCHINDUCTOR_CACHE_DIR to torch's default; that must not count as the user's choice.
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    with mock.patch.dict(os.environ):  # every variable set here is restored after
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        cache_dir()  # what that import does: torch's default written into the environment
        runtime.setup_compile_cache()
        chosen = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        assert chosen.is_relative_to(os.environ["FORGETLESS_CACHE"]) and Path(cache_dir()) == chosen
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "mine")  # the user's choice stays
        runtime.setup_compile_cache()
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
