"""Typed run configurations: `PretrainConfig` and `FinetuneConfig`, loaded from and saved to YAML.

Each training setting is declared here once: its name, type, default, allowed values and help.
The command line (`forgetless pretrain/finetune`, see train/options.py), YAML files, study files
(whose training fields are these fields, sweep/study_fields.py) and their `settings` all take
these field names; nothing else lists them. Rules between fields are train/config_fields.py's.

Fields left as None are filled by `resolved()` from each class's `DEFAULTS` table, whose entries
may depend on the model's size class (models/names.py SIZE_CLASSES: the CPU pilot of
docs/pilot.md for cpu, the gpu-quick preset for gpu, paper appendix A.1.1 for paper and outside
models); `--help` prints the same table, so the two cannot drift. The run directory's
`config.yaml` is the fully resolved config, so a run can be repeated exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgetless.counts import parse_count  # noqa: F401  (re-exported by forgetless.train)
from forgetless.errors import format_validation_error  # noqa: F401  (re-exported: one formatter)
from forgetless.models.names import PRESET_NAMES as PRESETS  # names only: no torch
from forgetless.optim.names import OPTIMIZER_NAMES as OPTIMIZERS  # names only: no torch
from forgetless.train.config_fields import (  # noqa: F401  (ByModel, Same, Rule, show: re-exported)
    LORA_FIELDS,
    ByModel,
    Rule,
    Same,
    by_size,
    check_eval_every,
    check_lora_fields,
    check_model,
    check_optimizer,
    parse_forgetting_budget,
    parse_steps,
    parse_tokens,
    show,
)
from forgetless.untrusted import MAX_VOCAB, load_yaml

TRACKERS = ("tensorboard", "wandb", "mlflow")


class TrainConfig(BaseModel):
    """What pretraining and finetuning share: optimizer, schedule, batches, evaluation, output."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    out_dir: Path = Field(description="run directory (config.yaml, metrics.jsonl, status.json, checkpoints/)",
                          json_schema_extra={"flags": ["--out", "--out-dir"]})
    optimizer: str | None = Field(None, description=f"optimizer (see `forgetless optimizers`): {', '.join(OPTIMIZERS)}")
    lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="peak learning rate")
    adamw_lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="lr of the AdamW side (default: lr)")
    weight_decay: float | None = Field(None, ge=0, allow_inf_nan=False, description="decoupled weight decay")
    momentum: float | None = Field(None, ge=0, lt=1, description="momentum of the rule (default 0.95)")
    optimizer_kwargs: dict[str, Any] = Field(default_factory=dict, description="more forgetless.optim.build options")
    warmup: float = Field(0.1, ge=0, lt=1, description="fraction of steps of linear warm-up")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the global gradient norm")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    batch_size: int | None = Field(None, ge=1, description="sequences per batch (an optimizer step takes grad_accum of them)")
    micro_batch: int | None = Field(
        None, ge=1, description="sequences per forward/backward; batches are cut into pieces this size, "
                                "gradients add up to the same step (None: sized from the model and free memory)")
    gradient_checkpointing: bool | None = Field(
        None, description="recompute activations in backward to save memory (None: on from 100M parameters)")
    seq_len: int | None = Field(None, ge=2, description="tokens per sequence")
    steps: int | None = Field(None, ge=1, description="optimizer steps, e.g. 400 or 2k")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout probability of the model")
    seed: int = Field(0, ge=0, description="seed of initialisation, data order and dropout")
    eval_every: int | None = Field(None, ge=1, description="steps between evaluations (at most steps)")
    eval_tokens: int = Field(65536, ge=1, description="held-out reference tokens per forgetting/validation point; "
                                                      "its standard error (over windows, ~1/sqrt(windows)) is printed")
    eval_batch_size: int | None = Field(None, ge=1, description="sequences per evaluation batch")
    save_every: int | None = Field(None, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(1, ge=1, description="newest checkpoints kept on disk")
    log_every: int = Field(10, ge=1, description="steps between train-loss lines and divergence checks")
    diverge_factor: float | None = Field(
        10.0, gt=1, description="stop as diverged when the training loss passes this multiple of its first value")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the model (pays off on long runs)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    parallel: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: ddp (a replica per process), fsdp (FSDP2 shards), "
                            "auto (fsdp from 1B parameters, else ddp)")
    consolidate: bool = Field(True, description="fsdp checkpoints also as a whole Hugging Face model")
    progress: bool = Field(True, description="progress bars with an ETA (training, each evaluation) on a terminal; "
                                             "without one, plain lines: every log_every steps, each evaluation")
    console: bool = Field(True, description="print the reference text, each eval point and a summary to stderr")
    trackers: list[str] = Field(default_factory=list, description="also log to tensorboard, wandb and/or mlflow",
                                json_schema_extra={"flags": ["--track", "--trackers"]})
    resume: bool = Field(False, description="continue from the newest checkpoint in out_dir")

    # What resolved() puts in each field left None (subclasses fill it; --help prints it).
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def _filled(self, model: str | None, **computed: Any) -> dict[str, Any]:
        """Updates for every None field: `computed` first, then DEFAULTS (ByModel picked for
        `model`), then Same references; fields already set are left alone."""
        update: dict[str, Any] = {}
        for name, default in self.DEFAULTS.items():
            if getattr(self, name) is not None:
                continue
            if name in computed:
                update[name] = computed[name]
            elif isinstance(default, ByModel):
                update[name] = default.pick(model)
            elif not isinstance(default, (Same, Rule)):
                update[name] = default
        for name, default in self.DEFAULTS.items():
            if isinstance(default, Same) and getattr(self, name) is None:
                update[name] = update.get(default.field, getattr(self, default.field))
        return update

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str | None) -> str | None:
        return check_optimizer(v)

    @field_validator("trackers")
    @classmethod
    def _known_trackers(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in TRACKERS]
        if bad:
            raise ValueError(f"trackers {bad} are unknown; allowed: {', '.join(TRACKERS)}")
        return v

    @field_validator("steps", mode="before")
    @classmethod
    def _count_steps(cls, v: Any) -> Any:
        return parse_steps(v)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"device {v!r} is unknown; allowed: auto, cpu, cuda, cuda:N, mps")
        return v

    # -- YAML round trip -----------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any):
        """Load a YAML file; `overrides` (non-None values) replace its fields."""
        data = load_yaml(Path(path).read_text()) or {}  # bounded: no alias bomb, no duplicate key
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


class PretrainConfig(TrainConfig):
    """Pretraining from scratch: a model preset trained on a corpus's training split."""

    model: str = Field("micro", description=f"model preset: {', '.join(PRESETS)}")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="LlamaConfig fields replacing the preset's")
    corpus: str = Field("stdlib", description="corpus spec (see forgetless.data)")
    tokenizer: str | None = Field(None, description="HF tokenizer path/name (default: train a BPE)")
    vocab_size: int | None = Field(None, ge=2, le=MAX_VOCAB, description="BPE vocabulary when training one")
    tokens: int | None = Field(None, description="training tokens (sets steps), e.g. 5M")
    schedule: Literal["cosine", "wsd", "constant"] = Field(
        "cosine", description="lr schedule after the warm-up: cosine to min_lr_ratio; wsd (warm-up/stable/decay): "
                              "constant, then linear to min_lr_ratio over the last `decay` of the steps; "
                              "constant (a WSD trunk that decay branches finish)")
    decay: float = Field(0.2, gt=0, le=1, description="wsd: fraction of the steps in the final decay")
    warmup_steps: int | None = Field(None, ge=0, description="warm-up steps (None: warmup x steps); "
                                                             "a WSD trunk and its branches share it")
    start_from: str | None = Field(
        None, description="a checkpoint (or run directory: its newest) whose weights, optimizer state, lr "
                          "schedule position, RNG and step this run continues from, to `steps` (a decay "
                          "branch of a WSD trunk); the run's own checkpoints take precedence on resume")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return check_model(v)

    @field_validator("tokens", mode="before")
    @classmethod
    def _count_tokens(cls, v: Any) -> Any:
        return parse_tokens(v)

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1, "dropout": 0.0,
        "vocab_size": ByModel({"nano": 4096, "micro": 4096, "small": 8192, "medium": 8192}, 8192),
        "seq_len": by_size(128, 512, 1024), "batch_size": by_size(32, 64, 240),
        "tokens": ByModel({"nano": 200_000, "micro": 1_500_000, "small": 5_000_000, "medium": 12_000_000},
                          8_000_000_000),
        "steps": Rule("tokens / (batch_size x seq_len x grad_accum)"),
        "eval_every": by_size(100, 100, 1000), "save_every": Same("eval_every"), "eval_batch_size": Same("batch_size"),
    }

    def resolved(self) -> PretrainConfig:
        """Every None filled from DEFAULTS: the pilot for nano/micro/small, paper A.1.1 above."""
        d = self.DEFAULTS
        seq_len = self.seq_len or d["seq_len"].pick(self.model)
        batch = self.batch_size or d["batch_size"].pick(self.model)
        per_step = seq_len * batch * self.grad_accum
        steps = self.steps or max(1, round((self.tokens or d["tokens"].pick(self.model)) / per_step))
        eval_every = self.eval_every or max(1, min(steps, d["eval_every"].pick(self.model)))
        update = self._filled(self.model, seq_len=seq_len, batch_size=batch, steps=steps, eval_every=eval_every)
        update["tokens"] = steps * per_step  # what the steps really train on
        return self.model_copy(update=update)


class FinetuneConfig(TrainConfig):
    """Supervised finetuning of a base model (a forgetless run directory or any HF causal LM)."""

    base: str = Field(description="base model: a forgetless run dir, an HF checkpoint dir or a hub name",
                      json_schema_extra={"cli": "argument"})
    task: str = Field(description="SFT task: a name, a data file (.jsonl .json .parquet .csv) or hf:NAME "
                                  "(see forgetless.data.load_task and docs/data.md)")
    columns: dict[str, str] | None = Field(
        None, description="rename the data's columns to the format's: {data column: format column}, "
                          "or 'question=prompt,reply=completion'")
    method: Literal["full", "lora"] = Field("full", description="full finetuning or LoRA")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r", json_schema_extra={"flags": ["--lora-rank", "--rank"]})
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha",
                                     json_schema_extra={"flags": ["--lora-alpha", "--alpha"]})
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    lora_targets: list[str] | None = Field(None, description="module names LoRA adapts (None: every linear but the head)")
    merge: bool = Field(True, description="save LoRA checkpoints merged into the base weights")
    train_n: int | None = Field(None, ge=1, description="training records used (default: all)")
    eval_n: int = Field(256, ge=1, description="held-out task records for the learning loss")
    eval_tokens: int = Field(16384, ge=1, description="reference tokens per forgetting point: Δ's paired error "
                                                      "≈ 0.0034 (128-token windows) to 0.0063 (1024) at 0.1 nats "
                                                      "of forgetting (docs/training.md)")
    task_seed: int = Field(0, ge=0, description="seed choosing the task's records (not their order)")
    accuracy: bool = Field(False, description="also measure exact-match accuracy of greedy answers")
    accuracy_n: int = Field(64, ge=1, description="held-out records generated for accuracy")
    max_new_tokens: int = Field(32, ge=1, description="generation length for accuracy")
    forget_corpus: str | None = Field(None, description="reference text of forgetting (a corpus spec; NAME=SPEC,"
                                                        "NAME=SPEC names its sources), tokenised with the model's "
                                                        "tokenizer")
    forget_tokenizer: str | None = Field(None, description="tokenizer of the reference text")
    forget_vocab_size: int | None = Field(None, ge=2, le=MAX_VOCAB, description="BPE size when one is trained for the reference")
    forget_seq_len: int | None = Field(None, ge=2, description="sequence length of the forgetting sample")
    forget_balance: bool | None = Field(None, description="equal tokens from each source of the reference (prose, code)")
    # Forgetting remedies (forgetless.train.remedies, docs/remedies.md)
    replay: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False,
                          description="share of each batch's sequences replaced by windows of the reference's "
                                      "training split, or of replay_corpus (Bethune et al. 2025: about 0.01 "
                                      "stops forgetting)")
    replay_corpus: str | None = Field(
        None, description="text to replay (a corpus spec: a folder, a .txt, file.jsonl:FIELD, hf:NAME), its training "
                          "split tokenised with the model's tokenizer; needed for a base forgetless did not pretrain, "
                          "whose forgetting sample takes both splits of the reference (the sample is unchanged)")
    harness: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks (hellaswag, arc_easy, ...) also measured at "
                                          "every eval point, their mean accuracy as forgetting_accuracy (needs "
                                          'pip install "forgetless[harness]")')
    harness_limit: int | None = Field(None, ge=1, description="documents per harness task (None: all of them)")
    harness_tasks_dir: str | None = Field(None, description="folder of your own lm_eval task YAML files "
                                                            "(lm_eval's include_path), e.g. tasks over local data")
    l2sp: float = Field(0.0, ge=0, allow_inf_nan=False,
                        description="L2-SP coefficient: loss + l2sp/2 x |weights - pretrained weights|^2 (Li et al. 2018)")
    eval_early: bool = Field(False, description="also evaluate at steps 1, 2, 4, 8, ... below eval_every, so the "
                                                "low-forgetting start of the trajectory is measured")
    wise: list[float] = Field(default_factory=list,
                              description="WiSE-FT: after training, evaluate (1-a) x base + a x finetune for each a "
                                          "in [0, 1] (Wortsman et al. 2022; evaluations only)")
    # A forgetting budget (forgetless.train.budget, docs/training.md)
    forgetting_budget: float | str | None = Field(
        None, description="keep the checkpoint that learned most within this much forgetting, as <run>/best-within-"
                          "budget/, and stop when forgetting has left it: nats above the base's forgetting loss "
                          "(0.1) or a share of it (5%), on the total and on each source; WiSE rolls back when "
                          "no evaluation stayed within")
    budget_patience: int = Field(2, ge=1, description="evaluations in a row outside the forgetting budget "
                                                      "before the run stops")

    @field_validator("forgetting_budget", mode="before")
    @classmethod
    def _forgetting_budget(cls, v: Any) -> float | str | None:
        return parse_forgetting_budget(v)

    @field_validator("wise")
    @classmethod
    def _wise_alphas(cls, v: list[float]) -> list[float]:
        bad = [a for a in v if not 0 <= a <= 1]
        if bad:
            raise ValueError(f"wise: each alpha must be in [0, 1]; got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"wise: alphas repeat: {v}")
        return v

    @field_validator("columns", mode="before")
    @classmethod
    def _parse_columns(cls, v: Any) -> dict[str, str] | None:
        from forgetless.data.user_data import parse_columns

        return parse_columns(v) or None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> FinetuneConfig:
        # A LoRA field counts as given when it differs from its default: a full run's resolved
        # config.yaml records the defaults (lora_rank 16), and resuming it must stay possible.
        fields = type(self).model_fields
        check_lora_fields(self.method, {k: getattr(self, k) for k in LORA_FIELDS
                                        if getattr(self, k) != fields[k].get_default(call_default_factory=True)})
        # Finetunes only: a pretraining run may evaluate less often than its steps (a WSD trunk
        # piece shorter than its entry's eval_every evaluates at its end, sweep/branches.py).
        check_eval_every(self.steps, self.eval_every)
        return self

    # ByModel entries are picked by the base's preset (a forgetless run's model; other models take
    # the paper class's value).
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "optimizer": Rule("the optimizer that pretrained the base (run config or registry), else adamw"),
        "lr": Rule("1e-4 for method full, 1e-3 for lora"), "weight_decay": 0.0, "dropout": 0.1,
        "steps": by_size(300, 72, 800), "batch_size": by_size(32, 64, 128), "seq_len": by_size(128, 256, 1024),
        "eval_every": by_size(50, 12, 200), "save_every": Same("eval_every"), "eval_batch_size": Same("batch_size"),
        "lora_alpha": Rule("2 x lora_rank"),
        "forget_corpus": Rule("the base run's corpus; for other models stdlib, half prose, half code"),
        "forget_tokenizer": Rule("the model's own"),
        "forget_balance": Rule("on when forget_corpus is not given and forgetless did not pretrain the base"),
        "forget_vocab_size": Rule("the base's, else 8192"),
        "forget_seq_len": Rule("the base's pretraining seq_len, else seq_len"),
    }

    def resolved(self, base_info: dict[str, Any]) -> FinetuneConfig:
        """Every None filled from DEFAULTS. `base_info` describes the base (see finetune.describe_base)."""
        d, model, lora = self.DEFAULTS, base_info.get("model"), self.method == "lora"
        steps = self.steps or d["steps"].pick(model)
        seq_len = self.seq_len or d["seq_len"].pick(model)
        update = self._filled(
            model, steps=steps, seq_len=seq_len, eval_every=min(steps, d["eval_every"].pick(model)),
            optimizer=base_info.get("optimizer") or "adamw", lr=1e-3 if lora else 1e-4,
            forget_corpus=base_info.get("corpus") or "stdlib",
            # always the model's own tokenizer (the checkpoint holds it): a BPE trained on the
            # reference text would feed the model ids of another vocabulary
            forget_tokenizer=base_info.get("checkpoint") or base_info.get("tokenizer"),
            forget_balance=not self.forget_corpus and not base_info.get("corpus"),
            forget_vocab_size=base_info.get("vocab_size") or 8192,
            forget_seq_len=base_info.get("seq_len") or seq_len)
        if lora and self.lora_alpha is None:
            update["lora_alpha"] = 2.0 * self.lora_rank
        return self.model_copy(update=update)
