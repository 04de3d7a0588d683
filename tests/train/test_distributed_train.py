"""Training under torchrun (2 CPU processes, gloo): DDP and FSDP2 give the parameters of one process
on the same global batch, for AdamW and Muon; a sharded checkpoint resumes and consolidates.

The reference is the ordinary single-process run of the same config; the distributed runs start
through the command line (`forgetless pretrain --nproc 2`), as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml

from forgetless.train import FinetuneConfig, PretrainConfig, finetune, pretrain

# micro-batches of 3 rows over 2 ranks (uneven shares) and 2 micro-batches per step (accumulation)
SETTINGS = dict(model="nano", vocab_size=512, seq_len=32, batch_size=3, grad_accum=2, steps=6,
                eval_every=3, eval_tokens=256, progress=False, threads=1, lr=3e-3)


def _cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "forgetless", *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _write(corpus: Path, tmp: Path, name: str, **fields) -> Path:
    cfg = {**SETTINGS, "corpus": str(corpus), "out_dir": str(tmp / name), **fields}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 2e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


@pytest.fixture(scope="module")
def reference(corpus_dir, tmp_path_factory):
    """Single-process runs, one per optimizer."""
    out = {}
    for opt in ("adamw", "muon"):
        run = tmp_path_factory.mktemp("single") / opt
        result = pretrain(PretrainConfig(**SETTINGS, corpus=str(corpus_dir), optimizer=opt, out_dir=run))
        out[opt] = result
    return out


@pytest.fixture(scope="module")
def distributed_runs(corpus_dir, tmp_path_factory):
    """The same runs under torchrun, all in one job; fsdp-muon keeps shards-only checkpoints at
    steps 2 and 4 (the resume test continues from them). The command-line path (`--nproc`) is
    exercised by the resume and finetune tests."""
    tmp = tmp_path_factory.mktemp("distributed")
    extra = {"fsdp-muon": dict(save_every=2, keep_checkpoints=3, consolidate=False)}
    runs = {(p, o): f"{p}-{o}" for p in ("ddp", "fsdp") for o in ("adamw", "muon")}
    configs = [str(_write(corpus_dir, tmp, name, optimizer=o, parallel=p, **extra.get(name, {})))
               for (p, o), name in runs.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(Path(__file__).with_name("_distributed_runs.py")), *configs],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {key: tmp / name for key, name in runs.items()}


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_same_parameters_as_one_process(reference, distributed_runs, parallel, optimizer) -> None:
    run = distributed_runs[parallel, optimizer]
    single = reference[optimizer]
    ckpt = run / "checkpoints" / "step-000006"
    _assert_close(_weights(ckpt), _weights(single.final_checkpoint))
    # the same eval points (the rows of each eval batch were split over the ranks)
    points = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [p["forgetting"] for p in points if p["kind"] == "eval"]
    assert evals == pytest.approx([p["forgetting"] for p in single.points], rel=1e-5)
    assert len(evals) == 3  # rank 0 alone wrote metrics
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    if parallel == "fsdp":  # sharded safetensors, consolidated into a plain HF checkpoint
        assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [
            "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]
        assert (ckpt / "model.safetensors.index.json").is_file()
        assert not list(ckpt.glob("*.metadata"))  # nothing pickled


def test_sharded_checkpoint_resumes_and_consolidates(tmp_path, distributed_runs) -> None:
    # consolidate off: intermediate checkpoints are shards only (the last one is made whole anyway)
    full = distributed_runs["fsdp", "muon"]
    step4 = full / "checkpoints" / "step-000004"
    assert not list(step4.glob("model*.safetensors")) and (step4 / "optimizer").is_dir()

    # consolidation in one process, without torch.distributed: our reader against DCP's writer
    step6 = full / "checkpoints" / "step-000006"
    uninterrupted = _weights(step6)
    _cli(["consolidate", str(step6), "--out", str(tmp_path / "hf6")], tmp_path)
    _assert_close(_weights(tmp_path / "hf6"), uninterrupted, tol=0)
    _cli(["consolidate", str(step4), "--out", str(tmp_path / "hf4")], tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf4")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf4")
    assert model(**tok("the cat sat", return_tensors="pt")).logits.isfinite().all()

    # a kill after step 4: the newer checkpoint is gone; --resume continues from step 4's shards
    shutil.rmtree(step6)
    _cli(["pretrain", "--out", str(full), "--resume", "--nproc", "2"], tmp_path)
    resumed = _weights(step6)
    for k in uninterrupted:
        assert torch.equal(resumed[k], uninterrupted[k]), k


def test_finetune_fsdp_matches_one_process(base_run, tmp_path) -> None:
    settings = dict(base=str(base_run.out_dir), task="arith", optimizer="muon", lr=1e-3, steps=4,
                    eval_every=2, batch_size=3, seq_len=64, dropout=0.0, eval_n=16, eval_tokens=256,
                    progress=False, threads=1)
    single = finetune(FinetuneConfig(**settings, out_dir=tmp_path / "single"))
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml.safe_dump({**settings, "out_dir": str(tmp_path / "fsdp"), "parallel": "fsdp"}))
    _cli(["finetune", "--config", str(cfg), "--nproc", "2"], tmp_path)
    points = [json.loads(line) for line in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    evals = [p for p in points if p["kind"] == "eval"]
    for key in ("forgetting", "learning"):
        assert [p[key] for p in evals] == pytest.approx([p[key] for p in single.points], rel=1e-5)
    assert evals[-1]["forgetting_by_source"] == pytest.approx(single.points[-1]["forgetting_by_source"], rel=1e-5)
    _assert_close(_weights(tmp_path / "fsdp" / "checkpoints" / "step-000004"), _weights(single.final_checkpoint))


def test_bad_parallel_and_plain_resume_of_shards(corpus_dir, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "forgetless", "pretrain", "--parallel", "zero3",
                           "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and "parallel" in proc.stderr and "fsdp" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "forgetless", "consolidate", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "checkpoint" in proc.stderr
