"""create_optimizer, ForgetlessTrainerMixin and ForgettingCallback inside real Hugging Face Trainer
runs: the weights that should train move, the forgetting metric reaches TensorBoard, W&B (offline)
and MLflow as their own readers see it, and PEFT in either order trains or refuses loudly."""

import logging

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

import trackers_readback as rb
from forgetless.integrations import (
    ForgetlessTrainerMixin,
    ForgettingCallback,
    create_optimizer,
    optimizer_factory,
    resolve_family,
)
from forgetless.recommend import recommend

TEXTS = [f"def function_{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(60)]
REFERENCE = [t.upper() for t in TEXTS[:30]]  # a "pretraining" sample unlike the task data
SEQ = 16


def _tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(TEXTS + REFERENCE,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def _model(name):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      _name_or_path=name)
    model = LlamaForCausalLM(cfg)
    model.config._name_or_path = name
    return model


def _hf_reference_loss(model, tok, texts) -> float:
    """Independent reference: HF's own mean token loss on the callback's windows."""
    ids = []
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = (len(ids) - 1) // SEQ
    windows = torch.tensor([ids[i * SEQ : i * SEQ + SEQ + 1] for i in range(n)])
    was = model.training
    model.eval()
    with torch.no_grad():
        loss = float(model(input_ids=windows, labels=windows).loss)
    model.train(was)
    return loss


class _Windows(torch.utils.data.Dataset):
    def __init__(self, tok):
        ids = []
        for t in TEXTS:
            ids += tok(t)["input_ids"]
        self.items = [ids[i : i + SEQ] for i in range(0, len(ids) - SEQ, SEQ)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        x = torch.tensor(self.items[i])
        return {"input_ids": x, "labels": x.clone()}


def _args(tmp_path, report_to, steps=4):
    return TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps,
                             per_device_train_batch_size=4, logging_steps=1, report_to=report_to,
                             save_strategy="no", use_cpu=True, disable_tqdm=True, learning_rate=1e-3)


def test_resolve_family_from_provenance_and_names():
    assert resolve_family(_model("meta-llama/Llama-2-7b-hf"))[0] == "adamw"
    assert resolve_family(_model("moonshotai/Moonlight-16B-A3B"))[0] == "muon"
    assert resolve_family(_model("x"), "l2->l2")[0] == "muon"
    assert resolve_family(_model("x"), "lion")[0] == "lion"
    with pytest.raises(ValueError, match="family: 'adam2'"):
        resolve_family(_model("x"), "adam2")


def test_auto_family_is_recommends_resolver(tmp_path):
    """Failure 4: a forgetless Muon-pretrained base is Llama-architecture; its run config, not
    its model_type, decides, for create_optimizer exactly as for `forgetless recommend`."""
    run = tmp_path / "muon-base"
    ckpt = run / "checkpoints" / "final"
    _model("x").save_pretrained(ckpt)
    (run / "config.yaml").write_text("optimizer: muon\nmodel: micro\nlr: 0.003\n")
    loaded = LlamaForCausalLM.from_pretrained(ckpt)
    name, why = resolve_family(loaded)
    assert name == "muon" == recommend(ckpt).pretrain_optimizer
    assert "config.yaml" in why
    rules = {g["rule"] for g in create_optimizer(loaded, lr=1e-3).param_groups}
    assert "muon" in rules
    # An architecture alone is a guess: AdamW, but never "documented".
    name, why = resolve_family(_model("acme/base-135m"))
    assert name == "adamw" and "assumed" in why and "documented" not in why
    anon = tmp_path / "acme-base"
    _model("x").save_pretrained(anon)
    rec = recommend(anon)
    assert (rec.pretrain_optimizer, rec.provenance_status) == ("adamw", "assumed")


def test_create_optimizer_routes_hidden_matrices_to_muon():
    model = _model("moonshotai/Moonlight-16B-A3B")
    opt = create_optimizer(model, lr=1e-3)
    rules = {g["rule"] for g in opt.param_groups}
    assert "muon" in rules and "adamw" in rules
    q = model.model.layers[0].self_attn.q_proj.weight
    assert any(g["rule"] == "muon" and any(p is q for p in g["params"]) for g in opt.param_groups)


def test_create_optimizer_refuses_what_would_train_nothing(tmp_path):
    """Failure 3: an optimizer over frozen weights must not train nothing in silence."""
    frozen = _model("meta-llama/Llama-2-7b-hf").requires_grad_(False)
    with pytest.raises(ValueError, match="none of its parameters requires grad.*get_peft_model"):
        create_optimizer(frozen)
    # Built first, wrapped after (what TRL's peft_config does): the first step refuses.
    model = _model("meta-llama/Llama-2-7b-hf")
    opt = create_optimizer(model, lr=1e-3)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainer = Trainer(model=peft_model, args=_args(tmp_path, []), train_dataset=_Windows(_tokenizer()),
                      optimizers=(opt, None))
    with pytest.raises(RuntimeError, match="none of its .* parameters requires grad"):
        trainer.train()


def test_forgetting_reaches_every_tracker_in_a_trainer_run(tmp_path, monkeypatch):
    rb.local_trackers(monkeypatch, tmp_path)
    tok = _tokenizer()
    model = _model("meta-llama/Llama-2-7b-hf")
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    base = _hf_reference_loss(model, tok, REFERENCE)
    cb = ForgettingCallback(REFERENCE, tok, every=2, seq_len=SEQ, batch_size=4)
    trainer = Trainer(model=model, args=_args(tmp_path, ["tensorboard", "wandb", "mlflow"]),
                      train_dataset=_Windows(tok), optimizers=(create_optimizer(model, lr=1e-3), None))
    cb.attach(trainer)
    try:
        trainer.train()
        final = _hf_reference_loss(model, tok, REFERENCE)
        expected = {0: base, 4: final}
        assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, before)  # it trained
        assert [h["step"] for h in cb.history] == [0, 2, 4]
        seen = {"tensorboard": rb.tensorboard(tmp_path / "tb"), "wandb": rb.wandb(tmp_path),
                "mlflow": rb.mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}", "forgetless-test")}
    finally:
        rb.stop_wandb()
    for tracker, got in seen.items():
        tb_style = tracker != "mlflow"  # TensorBoard and W&B rewrite eval_x as eval/x
        key = "eval/forgetting_loss" if tb_style else "eval_forgetting_loss"
        delta = "eval/forgetting_delta" if tb_style else "eval_forgetting_delta"
        loss = "train/loss" if tb_style else "loss"
        assert sorted(got[key]) == [0, 2, 4], tracker
        for step, value in expected.items():
            assert got[key][step] == pytest.approx(value, rel=1e-4), (tracker, step)
        assert got[delta][4] == pytest.approx(final - base, abs=1e-4), tracker
        assert sorted(got[loss]) == [1, 2, 3, 4], tracker  # the Trainer's own lines are all kept


def test_mixin_builds_after_peft_and_logs_per_source(tmp_path, monkeypatch):
    """PEFT-wrapped model, no optimizer given: the mixin builds one over the adapters."""
    rb.local_trackers(monkeypatch, tmp_path)
    tok = _tokenizer()
    model = get_peft_model(_model("meta-llama/Llama-2-7b-hf"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    cb = ForgettingCallback({"upper": REFERENCE, "plain": TEXTS[30:]}, tok, every=2, seq_len=SEQ,
                            batch_size=4)

    class ForgetlessTrainer(ForgetlessTrainerMixin, Trainer):
        pass

    trainer = ForgetlessTrainer(model=model, args=_args(tmp_path, ["tensorboard"]),
                                train_dataset=_Windows(tok), callbacks=[cb])
    trainer.train()
    lora_b = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_b.abs().sum() > 0  # initialised at 0: only training moves it
    assert trainer.optimizer.param_groups[0]["lr"] >= 0  # the mixin's optimizer, with a schedule
    got = rb.tensorboard(tmp_path / "tb")
    assert sorted(got["eval/forgetting_loss_upper"]) == [0, 2, 4]
    base = model.get_base_model()
    with model.disable_adapter():
        assert got["eval/forgetting_loss_upper"][0] == pytest.approx(
            _hf_reference_loss(base, tok, REFERENCE), rel=1e-4)
    assert got["eval/forgetting_loss_upper"][4] == pytest.approx(
        _hf_reference_loss(model, tok, REFERENCE), rel=1e-4)


def test_optimizer_factory_in_a_plain_trainer(tmp_path):
    model = get_peft_model(_model("meta-llama/Llama-2-7b-hf"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainer = Trainer(model=model, args=_args(tmp_path, [], steps=2), train_dataset=_Windows(_tokenizer()),
                      optimizer_cls_and_kwargs=optimizer_factory(family="muon", lr=1e-3))
    trainer.train()
    assert {g["rule"] for g in trainer.optimizer.param_groups} >= {"muon"}
    lora_b = model.base_model.model.model.layers[1].self_attn.v_proj.lora_B["default"].weight
    assert lora_b.abs().sum() > 0


def test_unattached_callback_warns_and_keeps_log_history(tmp_path, caplog):
    tok = _tokenizer()
    model = _model("meta-llama/Llama-2-7b-hf")
    cb = ForgettingCallback(REFERENCE, tok, every=2, seq_len=SEQ, batch_size=4)
    args = _args(tmp_path, ["tensorboard"], steps=2)
    trainer = Trainer(model=model, args=args, train_dataset=_Windows(tok), callbacks=[cb])
    with caplog.at_level(logging.WARNING, logger="forgetless.integrations.callback"):
        trainer.train()
    assert "not attached" in caplog.text
    logged = [r["step"] for r in trainer.state.log_history if "eval_forgetting_loss" in r]
    assert logged == [0, 2]


def test_callback_bad_inputs():
    with pytest.raises(ValueError, match="every"):
        ForgettingCallback(["x"], every=0)
    cb = ForgettingCallback(["tiny"], _tokenizer(), seq_len=64)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        cb._prepare(None)


def test_every_none_measures_with_each_evaluation(tmp_path):
    tok = _tokenizer()
    model = _model("meta-llama/Llama-2-7b-hf")
    cb = ForgettingCallback(REFERENCE, tok, every=None, seq_len=SEQ, batch_size=4)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                             eval_strategy="steps", eval_steps=3, logging_steps=1, report_to=[],
                             save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=_Windows(tok), eval_dataset=_Windows(tok),
                      optimizers=(create_optimizer(model, lr=1e-3), None))
    cb.attach(trainer)
    trainer.train()
    history = trainer.state.log_history
    evals = [r["step"] for r in history if "eval_loss" in r]
    assert 3 in evals  # eval_steps=3 (the Trainer also evaluates at the last step)
    assert [r["step"] for r in history if "eval_forgetting_loss" in r] == [0] + evals


def test_delta_after_resume_is_from_the_base_model(tmp_path):
    """A run resumed from a checkpoint keeps the base model's loss (persisted in the checkpoint's
    trainer_state.json) as the delta's origin, not the resumed model's loss."""
    tok = _tokenizer()
    base = _hf_reference_loss(_model("x"), tok, REFERENCE)  # independent: HF's loss, fresh weights

    def trainer(callback):
        model = _model("x")  # the user's script starts from the base weights both times
        args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, save_steps=2,
                                 per_device_train_batch_size=4, logging_steps=1, report_to=[],
                                 use_cpu=True, disable_tqdm=True, learning_rate=1e-2)
        t = Trainer(model=model, args=args, train_dataset=_Windows(tok),
                    optimizers=(create_optimizer(model, lr=1e-2), None))
        callback.attach(t)
        return t

    first = ForgettingCallback(REFERENCE, tok, every=2, seq_len=SEQ, batch_size=4)
    trainer(first).train()
    at_2 = first.history[1]["forgetting"]
    assert abs(at_2 - base) > 1e-2  # measuring the resumed model as "base" would be caught
    second = ForgettingCallback(REFERENCE, tok, every=2, seq_len=SEQ, batch_size=4)
    resumed = trainer(second)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    final = _hf_reference_loss(resumed.model, tok, REFERENCE)
    assert [h["step"] for h in second.history] == [0, 2, 4]
    assert second.history[0]["forgetting"] == pytest.approx(base, rel=1e-4)
    assert second.history[-1]["forgetting"] == pytest.approx(final, rel=1e-4)
    assert second.history[-1]["delta"] == pytest.approx(final - base, abs=1e-4)
    logged = [r for r in resumed.state.log_history if r.get("step") == 4 and "eval_forgetting_delta" in r]
    assert logged[-1]["eval_forgetting_delta"] == pytest.approx(final - base, abs=1e-4)
