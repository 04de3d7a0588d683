"""lm-evaluation-harness accuracy on tasks the test writes over local files, offline.

Every score is checked against a brute-force computation with plain forward passes: for multiple
choice, the summed log-likelihood of each choice after the prompt and its argmax; for generation,
a greedy decoding loop.
"""

import json
import os
import sys

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

pytest.importorskip("lm_eval")

import trackers_readback as rb  # noqa: E402
from forgetless.integrations import ForgetlessTrainerMixin  # noqa: E402
from forgetless.integrations.harness import (  # noqa: E402
    HarnessCallback,
    harness_point,
    harness_scores,
)

MC_DOCS = [
    {"question": f"what is {a} plus {b}?",
     "choices": [str(a + b), f"{a * b} apples", "none of these", "x"][::(1 if a % 2 else -1)],
     "answer": (a * 3 + b) % 4}
    for a, b in zip(range(1, 13), [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], strict=True)
]
GEN_QUESTIONS = [f"name the number {i}" for i in range(8)]

MC_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
{metrics}
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""


def _tokenizer():
    texts = [f"Q: {d['question']}\nA: " + " ".join(d["choices"]) for d in MC_DOCS] + GEN_QUESTIONS
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>",
                                   unk_token="<unk>")


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def brute_mc(model, tok, docs, norm=False) -> float:
    """Share of questions whose highest log p(" " + choice | prompt) choice is the target.

    norm=True divides by the choice's length in characters (lm-eval's acc_norm).
    """
    correct = []
    with torch.no_grad():
        for d in docs:
            prompt = f"Q: {d['question']}\nA:"
            ctx = tok(prompt)["input_ids"]
            scores = []
            for c in d["choices"]:
                cont = tok(" " + c)["input_ids"]
                # The prompt/choice boundary is a token boundary, so scoring the two pieces
                # separately is the same as scoring the joint string.
                assert tok(prompt + " " + c)["input_ids"] == ctx + cont
                logp = model(input_ids=torch.tensor([ctx + cont])).logits[0].log_softmax(-1)
                ll = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
                scores.append(ll / len(c) if norm else ll)
            best = max(range(len(scores)), key=scores.__getitem__)
            correct.append(float(best == d["answer"]))
    return sum(correct) / len(correct)


def greedy(model, tok, prompt, n=4) -> str:
    """Greedy decoding of up to n tokens, stopped at <eos>, cut at the first newline."""
    ids, out = tok(prompt)["input_ids"], []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True).split("\n")[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    tok, model = _tokenizer(), _model()
    # Half of the generation targets are the model's own greedy answer, half can never match.
    gen_docs = [{"question": q, "answer": greedy(model, tok, f"Q: {q}\nA:") if i % 2 == 0 else "nope"}
                for i, q in enumerate(GEN_QUESTIONS)]
    tasks = root / "tasks"
    tasks.mkdir()
    for name, docs in (("mc.jsonl", MC_DOCS), ("gen.jsonl", gen_docs)):
        (root / name).write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "tiny_mc.yaml").write_text(MC_YAML.format(
        name="tiny_mc", data=root / "mc.jsonl", metrics="  - metric: acc\n  - metric: acc_norm"))
    # Same questions, only acc_norm: the headline rule falls back to it.
    (tasks / "tiny_mc_norm.yaml").write_text(MC_YAML.format(
        name="tiny_mc_norm", data=root / "mc.jsonl", metrics="  - metric: acc_norm"))
    (tasks / "tiny_gen.yaml").write_text(GEN_YAML.format(data=root / "gen.jsonl"))
    # A local task over a hub dataset (ARC-Easy's own source), which offline cannot be loaded.
    (tasks / "tiny_hub.yaml").write_text(
        MC_YAML.format(name="tiny_hub", data="unused", metrics="  - metric: acc")
        .replace("dataset_path: json", "dataset_path: allenai/ai2_arc\ndataset_name: ARC-Easy")
        .replace("dataset_kwargs:\n  data_files:\n    test: unused\n", ""))

    # Offline: the environment for subprocesses, and the flags datasets / huggingface_hub read at
    # import (they may already be imported by other tests). The datasets cache is a tmp folder.
    import datasets.config
    import huggingface_hub.constants
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
            mp.setenv(var, "1")
        mp.setenv("FORGETLESS_CACHE", str(root / "cache"))
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "datasets")
        yield {"tok": tok, "model": model, "tasks": str(tasks), "gen_docs": gen_docs}


@pytest.fixture(scope="module")
def point(setup):
    return harness_point(setup["model"], setup["tok"], ["tiny_mc", "tiny_mc_norm"], ["tiny_gen"],
                         include_path=setup["tasks"], device="cpu")


def test_multiple_choice_accuracy_matches_brute_force(setup, point):
    acc = brute_mc(setup["model"], setup["tok"], MC_DOCS)
    acc_norm = brute_mc(setup["model"], setup["tok"], MC_DOCS, norm=True)
    assert 0 < acc < 1 and acc != acc_norm  # the data tells the two metrics apart
    assert point["harness"]["tiny_mc"] == acc  # acc and acc_norm reported -> headline acc
    assert point["harness"]["tiny_mc_norm"] == acc_norm  # only acc_norm reported
    assert point["forgetting_accuracy"] == pytest.approx((acc + acc_norm) / 2, abs=1e-12)


def test_generation_exact_match_matches_greedy_decoding(setup, point):
    model, tok = setup["model"], setup["tok"]
    hits = [greedy(model, tok, f"Q: {d['question']}\nA:") == d["answer"] for d in setup["gen_docs"]]
    assert point["harness"]["tiny_gen"] == sum(hits) / len(hits) == 0.5
    assert point["learning_accuracy"] == point["harness"]["tiny_gen"]
    assert list(point["harness"]) == ["tiny_mc", "tiny_mc_norm", "tiny_gen"]


def test_limit_metric_override_and_training_mode_kept(setup):
    model, tok = setup["model"], setup["tok"]
    model.train()
    try:
        scores = harness_scores(model, tok, ["tiny_mc"], include_path=setup["tasks"], limit=5,
                                batch_size=2, metric={"tiny_mc": "acc_norm"})
        assert model.training  # restored after the harness switched to eval mode
    finally:
        model.eval()
    assert scores == {"tiny_mc": brute_mc(model, tok, MC_DOCS[:5], norm=True)}
    with pytest.raises(ValueError, match="metric: task 'tiny_mc' reports no f1"):
        harness_scores(model, tok, ["tiny_mc"], include_path=setup["tasks"], limit=1, metric="f1")


def test_unknown_task_names_it_and_shows_available(setup):
    with pytest.raises(ValueError, match="tiny_mcq") as info:
        harness_scores(setup["model"], setup["tok"], ["tiny_mcq"], include_path=setup["tasks"])
    msg = str(info.value)
    assert "close: tiny_mc" in msg and "hellaswag" in msg and "local tasks under include_path" in msg


def test_hub_dataset_offline_points_to_local_tasks(setup):
    # Offline, with an empty datasets cache, a hub dataset cannot be loaded: the error says so
    # (the datasets library's message) and points to a task over local files.
    with pytest.raises(RuntimeError, match="could not be fetched.*include_path"):
        harness_scores(setup["model"], setup["tok"], ["tiny_hub"], include_path=setup["tasks"],
                       limit=2)


def test_bad_arguments(setup, monkeypatch):
    model, tok = setup["model"], setup["tok"]
    with pytest.raises(ValueError, match="tasks"):
        harness_scores(model, tok, "tiny_mc", include_path=setup["tasks"])
    with pytest.raises(ValueError, match="include_path"):
        harness_scores(model, tok, ["tiny_mc"], include_path=setup["tasks"] + "/missing")
    with pytest.raises(ValueError, match="batch_size"):
        harness_scores(model, tok, ["tiny_mc"], include_path=setup["tasks"], batch_size=0)
    with pytest.raises(ValueError, match="forgetting_tasks, learning_tasks"):
        harness_point(model, tok, [], [], include_path=setup["tasks"])
    with pytest.raises(ValueError, match="every"):
        HarnessCallback(["tiny_mc"], every=0)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r'pip install "forgetless\[harness\]"'):
        harness_scores(model, tok, ["tiny_mc"], include_path=setup["tasks"])


def _train_data(tok):
    ids = []
    for d in MC_DOCS:
        ids += tok(f"Q: {d['question']}\nA: {d['choices'][d['answer']]}\n")["input_ids"]
    windows = [torch.tensor(ids[i : i + 16]) for i in range(0, len(ids) - 16, 16)]
    return [{"input_ids": w, "labels": w.clone()} for w in windows]


def test_harness_callback_reaches_tensorboard(setup, tmp_path, monkeypatch):
    """Every measurement is its own log record, so the Trainer's TensorBoard writer holds it
    (read back from the event file), beside the Trainer's own lines."""
    rb.local_trackers(monkeypatch, tmp_path)  # TensorBoard writes to tmp_path / "tb"
    tok, model = setup["tok"], _model(seed=1)
    base = brute_mc(model, tok, MC_DOCS[:4])
    cb = HarnessCallback(["tiny_mc"], ["tiny_gen"], every=2, include_path=setup["tasks"], limit=4)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                             logging_steps=1, report_to=["tensorboard"], save_strategy="no",
                             use_cpu=True, disable_tqdm=True, learning_rate=1e-2)
    trainer = Trainer(model=model, args=args, train_dataset=_train_data(tok), processing_class=tok)
    cb.attach(trainer)
    trainer.train()
    final = brute_mc(model.eval(), tok, MC_DOCS[:4])
    assert [h["step"] for h in cb.history] == [0, 2, 4]
    assert cb.history[0]["forgetting_accuracy"] == base
    assert cb.history[-1]["forgetting_accuracy"] == final
    events = rb.tensorboard(tmp_path / "tb")
    assert sorted(events["eval/forgetting_accuracy"]) == [0, 2, 4]
    assert events["eval/forgetting_accuracy"][0] == pytest.approx(base)
    assert events["eval/forgetting_accuracy"][4] == pytest.approx(final)
    assert events["eval/harness_tiny_mc"] == events["eval/forgetting_accuracy"]
    assert events["eval/learning_accuracy"] == pytest.approx(
        {h["step"]: h["learning_accuracy"] for h in cb.history})
    assert sorted(events["train/loss"]) == [1, 2, 3, 4]  # the Trainer's own lines are all kept
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_harness_callback_with_each_evaluation(setup, tmp_path, monkeypatch):
    """every=None: measured with each Trainer evaluation (on_evaluate), at eval_loss's steps."""
    rb.local_trackers(monkeypatch, tmp_path)
    tok, model = setup["tok"], _model(seed=1)
    cb = HarnessCallback(["tiny_mc"], tokenizer=tok, every=None, include_path=setup["tasks"], limit=4)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
                             logging_steps=1, report_to=["tensorboard"], save_strategy="no",
                             eval_strategy="steps", eval_steps=2, use_cpu=True, disable_tqdm=True,
                             learning_rate=1e-2)

    class HarnessTrainer(ForgetlessTrainerMixin, Trainer):  # attaches the callback itself
        pass

    data = _train_data(tok)
    trainer = HarnessTrainer(model=model, args=args, train_dataset=data, eval_dataset=data[:4],
                             callbacks=[cb], forgetless_family="adamw")
    trainer.train()
    events = rb.tensorboard(tmp_path / "tb")
    evals = sorted(events["eval/loss"])
    assert evals == [2, 3]  # eval_steps=2 and the last step
    assert sorted(events["eval/forgetting_accuracy"]) == [0] + evals
    assert "eval/learning_accuracy" not in events  # no learning tasks: nothing logged
    assert [h["step"] for h in cb.history] == [0] + evals
