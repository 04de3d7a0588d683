"""The console a person reads: the reference text and its token count first, the step-0 evaluation
on its own line before the progress bar (which counts training steps only), one line per eval
point, a best-point summary; metrics.jsonl gets the same facts (a header, forgetting_delta)."""

from __future__ import annotations

import json

from forgetless.train import FinetuneConfig, finetune, loop

FT = dict(task="arith", steps=4, eval_every=2, batch_size=4, seq_len=64, eval_n=8, train_n=16,
          eval_tokens=512, progress=False, threads=1)


def test_console_lines_header_and_delta(base_run, corpus_dir, tmp_path, capsys, tiny) -> None:
    result = finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", lr=1e-3, **FT))
    err = capsys.readouterr().err.splitlines()
    points = result.points
    # The reference: named, with its token count (8 windows of the base's 64 tokens), first.
    assert err[0].startswith(f"forgetting reference: {corpus_dir} (") and "512 tokens in 8 windows of 64" in err[0]
    assert err[1] == "optimizer: adamw (documented provenance)"  # no --optimizer: the base's, from its run config
    assert err[2] == "task arith: 16 training records; 8 held out measure learning"  # train_n, eval_n
    assert err[3].startswith("each evaluation: ") and "(8 windows of 64, paired" in err[3]
    assert err[4].startswith("memory: micro_batch ")
    evals = [line for line in err if line.startswith("step ")]
    assert len(evals) == len(points) == 3
    assert evals[0] == f"step 0 (base): forgetting {points[0]['forgetting']:.4f} ± {points[0]['forgetting_se']:.4f} " \
                       "(Δ +0.0000 from base), " \
                       f"learning {points[0]['learning']:.4f}, accuracy -"
    last = points[-1]
    delta = last["forgetting"] - points[0]["forgetting"]
    assert evals[-1] == f"step 4/4: forgetting {last['forgetting']:.4f} ± {last['forgetting_se']:.4f} " \
                        f"(Δ {delta:+.4f} ± {last['forgetting_delta_se']:.4f} from base), " \
                        f"learning {last['learning']:.4f}, accuracy -"
    best = min(points, key=lambda p: p["learning"])
    assert err[-1].startswith(f"best: step {best['step']} (learning {best['learning']:.4f}")
    assert err[-1].endswith(str(result.final_checkpoint))
    # metrics.jsonl: a header naming the reference, then forgetting_delta in every point.
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    header = records[0]
    assert header["kind"] == "header" and header["reference"]["corpus"] == str(corpus_dir)
    assert header["reference"]["sample_tokens"] == 512 and header["memory"]["micro_batch"] >= 1
    for p in points:
        assert p["forgetting_delta"] == p["forgetting"] - points[0]["forgetting"]


def test_progress_bar_starts_after_the_step0_eval(base_run, tmp_path, monkeypatch) -> None:
    events: list[str] = []

    class Bar:  # records when the bar is made and how far it is moved
        def __init__(self, *args, total=None, initial=0, **kwargs):
            events.append(f"bar {initial}/{total}")

        def update(self, n=1):
            events.append("tick")

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

        @staticmethod
        def write(text, file=None):
            pass

    monkeypatch.setattr(loop, "tqdm", Bar)
    finetune(FinetuneConfig(base=str(base_run.out_dir), out_dir=tmp_path / "ft", console=False, **FT),
             on_eval=lambda p: events.append(f"eval {p['step']}"))
    assert events == ["eval 0", "bar 0/4", "tick", "tick", "eval 2", "tick", "tick", "eval 4"]
