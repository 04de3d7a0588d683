"""kl_to_base (issue 25 §3): the mean per-token KL(base ‖ model) on the forgetting sample, taken in
the forward that measures forgetting, against a brute force computed here from each model's full
logits, row by row."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers

from forgetless.sweep.store import Store
from forgetless.train import evaluate
from forgetless.train import kl as base_kl  # KL_TOP_K, TAIL_EXACT, _base_terms
from forgetless.train.evaluate import (
    IGNORE,
    BaseReference,
    forgetting_stats,
    loss_stats,
    row_loss_sums,
)

VOCAB = 211  # below KL_TOP_K: the kept distribution is the whole one, so the KL is exact


def _models():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    base = transformers.LlamaForCausalLM(cfg).eval()
    tuned = copy.deepcopy(base)
    with torch.no_grad():  # a "finetune": every weight moved a little
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return base, tuned


def _batches():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, VOCAB, (5, 12), generator=g), torch.randint(0, VOCAB, (5, 12), generator=g)
    y[1, :4] = IGNORE  # unscored positions must not shift the base's positions against the model's
    return [(x[:3], y[:3]), (x[3:], y[3:])]


def _brute_kl(base, tuned, batches, top_k: int | None = None) -> float:
    """Σ over scored positions of Σ_v p(v) (log p(v) − log q(v)) / their number, from each row's own
    forward; `top_k`: both distributions coarsened to the base's top_k tokens plus one bucket."""
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            for i in range(len(x)):
                keep = y[i] != IGNORE
                lp = base(input_ids=x[i:i + 1]).logits[0].double().log_softmax(-1)[keep]
                lq = tuned(input_ids=x[i:i + 1]).logits[0].double().log_softmax(-1)[keep]
                if top_k is not None:
                    idx = lp.topk(top_k, dim=-1).indices
                    rest_p = torch.log1p(-lp.gather(1, idx).exp().sum(1, keepdim=True).clamp(max=1 - 1e-12))
                    rest_q = torch.log1p(-lq.gather(1, idx).exp().sum(1, keepdim=True).clamp(max=1 - 1e-12))
                    lp, lq = torch.cat([lp.gather(1, idx), rest_p], 1), torch.cat([lq.gather(1, idx), rest_q], 1)
                total += float((lp.exp() * (lp - lq)).sum())
                n += int(keep.sum())
    return total / n


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("max_tokens", [None, 24])
def test_kl_to_base_matches_the_brute_force(tmp_path, monkeypatch, plain, max_tokens):
    if plain:  # a model whose logits are not a plain head: the full-logits path
        monkeypatch.setattr(evaluate, "head_split", lambda model: None)
    base, tuned = _models()
    batches = _batches()
    ref = BaseReference(tmp_path / "base_reference.safetensors")
    first = forgetting_stats(base, batches, torch.device("cpu"), max_tokens=max_tokens, base=ref)
    assert first["kl_to_base"] == 0.0 and (tmp_path / "base_reference.safetensors").is_file()
    want = _brute_kl(base, tuned, batches)
    assert want > 1e-4  # the perturbation is visible
    got = loss_stats(tuned, batches, torch.device("cpu"), max_tokens=max_tokens, base=ref).kl
    assert got == pytest.approx(want, rel=1e-5)
    # the base against itself, measured rather than recorded, is 0 up to float rounding
    assert abs(loss_stats(base, batches, torch.device("cpu"), max_tokens=max_tokens, base=ref).kl) < 1e-6
    # a resumed run reads the base's distributions back from the file
    resumed = BaseReference(tmp_path / "base_reference.safetensors", fresh=False)
    assert loss_stats(tuned, batches, torch.device("cpu"), max_tokens=max_tokens, base=resumed).kl \
        == pytest.approx(want, rel=1e-5)


def test_top_k_is_the_coarsened_kl_and_a_lower_bound(monkeypatch):
    monkeypatch.setattr(base_kl, "KL_TOP_K", 16)
    base, tuned = _models()
    batches = _batches()
    ref = BaseReference()
    loss_stats(base, batches, torch.device("cpu"), base=ref)
    got = loss_stats(tuned, batches, torch.device("cpu"), base=ref).kl
    assert got == pytest.approx(_brute_kl(base, tuned, batches, top_k=16), rel=1e-4)
    assert 0 < got < _brute_kl(base, tuned, batches)


def test_chunks_of_positions_line_up_with_the_kept_base():
    """Five positions per head chunk: each chunk's KL is taken against its own base positions."""
    base, tuned = _models()
    x, y = _batches()[0]
    chunk = 4 * VOCAB * 5
    kept: list = []
    with torch.no_grad():
        row_loss_sums(base, x, y, chunk_bytes=chunk, record=kept)
        ref = tuple(torch.cat(parts) for parts in zip(*kept, strict=True))
        _, n, kl = row_loss_sums(tuned, x, y, chunk_bytes=chunk, ref=ref)
    assert float(kl.sum() / n.sum()) == pytest.approx(_brute_kl(base, tuned, [(x, y)]), rel=1e-5)


def test_no_kl_without_the_base_and_the_store_keeps_it(tmp_path):
    base, tuned = _models()
    batches = _batches()
    lost = BaseReference(tmp_path / "missing.safetensors", fresh=False)  # resumed, its base file gone
    point = forgetting_stats(tuned, batches, torch.device("cpu"), base=lost)
    assert "kl_to_base" not in point and math.isfinite(point["forgetting"])
    with Store(tmp_path / "results.sqlite") as store:  # a sweep's store records it by its name
        store.add_study("s", {}, [])
        store.db.execute("INSERT INTO runs (cell_id, kind, label, config_json, status, created_at) "
                         "VALUES ('c', 'finetune', 'c', '{}', 'done', 0)")
        store.add_points("c", [{"step": 0, "forgetting": 4.0, "learning": 3.0, "kl_to_base": 0.0},
                               {"step": 5, "forgetting": 4.1, "learning": 2.0, "kl_to_base": 0.0625}])
        assert [p.value("kl_to_base") for p in store.eval_points(run_id="c")] == [0.0, 0.0625]


def test_a_finetune_records_kl_to_base_against_its_base_checkpoint(base_run, corpus_dir, tiny, tmp_path):
    """End to end: step 0 records 0, the last point the brute-force KL between the base checkpoint
    and the finetune's own checkpoint on the forgetting windows; the resume file is gone after."""
    from forgetless.data import prepare_pretraining_data, sample_batch
    from forgetless.train import FinetuneConfig, finetune
    from forgetless.train.evaluate import EVAL_SEED

    result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", lr=1e-3, task="arith",
                                     steps=4, eval_every=4, batch_size=8, seq_len=96, eval_n=8, train_n=32,
                                     eval_tokens=1024, progress=False, threads=1))
    assert result.status == "done"
    first, last = result.points[0], result.points[-1]
    val = prepare_pretraining_data(str(corpus_dir), vocab_size=tiny["vocab_size"], progress=False).val
    x, y = sample_batch(val, tiny["eval_tokens"] // tiny["seq_len"], tiny["seq_len"], EVAL_SEED, 0)
    load = transformers.AutoModelForCausalLM.from_pretrained
    base, tuned = load(base_run.final_checkpoint).eval(), load(result.final_checkpoint).eval()
    assert tiny["vocab_size"] > base_kl.KL_TOP_K  # kept: the base's top 256 of 512 tokens and the rest
    want = _brute_kl(base, tuned, [(x, y)], top_k=base_kl.KL_TOP_K)
    assert first["kl_to_base"] == 0.0
    assert last["kl_to_base"] == pytest.approx(want, rel=1e-4) and want > 0
    assert want <= _brute_kl(base, tuned, [(x, y)])  # here within 0.4% of the full KL
    assert not (tmp_path / "ft" / "base_reference.safetensors").exists()
    # every measurement the training box wrote is declared in the registry (forgetless.metrics)
    from forgetless import metrics

    bookkeeping = {"kind", "step", "tokens", "lr", "wall_time", metrics.SOURCES_KEY}
    assert set(last) - bookkeeping <= set(metrics.METRICS), set(last) - bookkeeping - set(metrics.METRICS)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_kl_to_base_under_torchrun_equals_one_process(base_run, tmp_path, parallel):
    """Two ranks each keep the base's distributions of their own rows: the KL summed over ranks is
    the one-process KL (FSDP takes the full-logits path)."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    from forgetless.train import FinetuneConfig, finetune

    settings = dict(base=str(base_run.out_dir), task="arith", optimizer="adamw", lr=1e-3, steps=4, eval_every=2,
                    batch_size=4, seq_len=64, dropout=0.0, eval_n=8, eval_tokens=512, progress=False, threads=1)
    single = finetune(FinetuneConfig(**settings, out_dir=tmp_path / "single"))
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml.safe_dump({**settings, "out_dir": str(tmp_path / "multi"), "parallel": parallel}))
    proc = subprocess.run([sys.executable, "-m", "forgetless", "finetune", "--config", str(cfg), "--nproc", "2"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
    evals = [p for p in map(json.loads, lines) if p["kind"] == "eval"]
    assert [p["kl_to_base"] for p in evals] == pytest.approx([p["kl_to_base"] for p in single.points], rel=1e-4)
    assert evals[0]["kl_to_base"] == 0.0 and evals[-1]["kl_to_base"] > 0


def test_the_rest_bucket_is_exact_for_confident_and_spread_models(monkeypatch):
    """Positions where the model keeps almost all its mass on the base's kept tokens (its rest below
    TAIL_EXACT) and positions where it does not: each position's coarsened KL against a float64
    brute force."""
    monkeypatch.setattr(base_kl, "KL_TOP_K", 4)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 50, generator=g) * 3
    model = base + torch.randn(6, 50, generator=g)
    for r in range(3):  # rows 0-2: the model sure of the base's top tokens
        model[r, base[r].topk(4).indices] += 25.0
    lp, lq = base.log_softmax(-1), model.log_softmax(-1)
    kept: list = []
    base_kl._base_terms(lp, 0, torch.arange(6), kept, None, None)
    kl = torch.zeros(6, dtype=torch.float64)
    base_kl._base_terms(lq, 0, torch.arange(6), None, tuple(kept[0]), kl)
    p, q = base.double().log_softmax(-1), model.double().log_softmax(-1)  # in float64 from the logits
    idx = p.topk(4).indices
    rest = lambda x: x.scatter(1, idx, -math.inf).logsumexp(1, keepdim=True)  # noqa: E731  the tail's own sum
    cp, cq = torch.cat([p.gather(1, idx), rest(p)], 1), torch.cat([q.gather(1, idx), rest(q)], 1)
    want = (cp.exp() * (cp - cq)).sum(1)
    assert (1 - q[:3].gather(1, idx[:3]).exp().sum(1) < base_kl.TAIL_EXACT).all()  # both cases are here
    assert (1 - q[3:].gather(1, idx[3:]).exp().sum(1) > base_kl.TAIL_EXACT).all()
    assert kl.tolist() == pytest.approx(want.tolist(), rel=1e-4)
