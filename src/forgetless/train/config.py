"""Typed run configurations: `PretrainConfig` and `FinetuneConfig`, loaded from and saved to YAML.

Fields left as None are filled by `resolved()` from defaults that depend on the model (paper
appendix A.1.1 for GPT-2 scale, the CPU pilot of docs/pilot.md for the small presets); the run
directory's `config.yaml` is the fully resolved config, so a run can be repeated exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forgetless.counts import parse_count
from forgetless.models import PRESETS
from forgetless.optim import OPTIMIZERS

TRACKERS = ("tensorboard", "wandb", "mlflow")
def _small(preset: str | None) -> bool:
    return preset in ("nano", "micro", "small")


class TrainConfig(BaseModel):
    """What pretraining and finetuning share: optimizer, schedule, batches, evaluation, output."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    out_dir: Path = Field(description="run directory (config.yaml, metrics.jsonl, checkpoints/)")
    optimizer: str | None = Field(None, description="a name of forgetless.optim.OPTIMIZERS")
    lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="peak learning rate")
    adamw_lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="lr of the AdamW side (default: lr)")
    weight_decay: float | None = Field(None, ge=0, allow_inf_nan=False, description="decoupled weight decay")
    momentum: float | None = Field(None, ge=0, lt=1, description="momentum of the rule (default 0.95)")
    optimizer_kwargs: dict[str, Any] = Field(default_factory=dict, description="more forgetless.optim.build options")
    warmup: float = Field(0.1, ge=0, lt=1, description="fraction of steps of linear warm-up")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the global gradient norm (None: off)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    batch_size: int | None = Field(None, ge=1, description="sequences per batch (an optimizer step takes grad_accum of them)")
    micro_batch: int | None = Field(
        None, ge=1, description="sequences per forward/backward; batches are cut into pieces this size, "
                                "gradients add up to the same step (None: sized from the model and free memory)")
    gradient_checkpointing: bool | None = Field(
        None, description="recompute activations in backward to save memory (None: on from 100M parameters)")
    seq_len: int | None = Field(None, ge=2, description="tokens per sequence")
    steps: int | None = Field(None, ge=1, description="optimizer steps")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout probability of the model")
    seed: int = Field(0, ge=0, description="seed of initialisation, data order and dropout")
    eval_every: int | None = Field(None, ge=1, description="steps between evaluations")
    eval_tokens: int = Field(65536, ge=1, description="held-out pretraining tokens per evaluation")
    eval_batch_size: int | None = Field(None, ge=1, description="sequences per evaluation batch")
    save_every: int | None = Field(None, ge=1, description="steps between checkpoints (default eval_every)")
    keep_checkpoints: int = Field(1, ge=1, description="newest checkpoints kept on disk")
    log_every: int = Field(10, ge=1, description="steps between train-loss lines and divergence checks")
    diverge_factor: float | None = Field(10.0, gt=1, description="stop when loss > factor x first loss")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the model (pays off on long runs)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    parallel: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: ddp (a replica per process), fsdp (FSDP2 shards), "
                            "auto (fsdp from 1B parameters, else ddp)")
    consolidate: bool = Field(True, description="fsdp checkpoints also as a whole Hugging Face model")
    progress: bool = Field(True, description="progress bar (off anyway when not a terminal)")
    console: bool = Field(True, description="print the reference text, each eval point and a summary to stderr")
    trackers: list[str] = Field(default_factory=list, description="tensorboard, wandb and/or mlflow")
    resume: bool = Field(False, description="continue from the newest checkpoint in out_dir")

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str | None) -> str | None:
        if v is not None and v not in OPTIMIZERS:
            raise ValueError(f"optimizer {v!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
        return v

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
        return None if v is None else parse_count(v, "steps")

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
        data = yaml.safe_load(Path(path).read_text()) or {}
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
    vocab_size: int | None = Field(None, ge=2, description="BPE vocabulary when training one")
    tokens: int | None = Field(None, description="training tokens (sets steps), e.g. 5M")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"model {v!r} is not a preset; allowed: {', '.join(PRESETS)}")
        return v

    @field_validator("tokens", mode="before")
    @classmethod
    def _count_tokens(cls, v: Any) -> Any:
        return None if v is None else parse_count(v, "tokens")

    def resolved(self) -> PretrainConfig:
        """Every None filled: pilot settings for nano/micro/small, paper A.1.1 for gpt2-small."""
        small = _small(self.model)
        seq_len = self.seq_len or (128 if small else 1024)
        batch = self.batch_size or (32 if small else 240)
        per_step = seq_len * batch * self.grad_accum
        default_tokens = {"nano": 200_000, "micro": 1_500_000, "small": 5_000_000}.get(self.model, 8 * 10**9)
        steps = self.steps or max(1, round((self.tokens or default_tokens) / per_step))
        eval_every = self.eval_every or max(1, min(steps, 100 if small else 1000))
        return self.model_copy(update=dict(
            optimizer=self.optimizer or "adamw",
            lr=self.lr or 3e-3,
            weight_decay=0.1 if self.weight_decay is None else self.weight_decay,
            vocab_size=self.vocab_size or {"nano": 4096, "micro": 4096}.get(self.model, 8192),
            seq_len=seq_len, batch_size=batch, steps=steps, tokens=steps * per_step,
            dropout=0.0 if self.dropout is None else self.dropout,
            eval_every=eval_every, save_every=self.save_every or eval_every,
            eval_batch_size=self.eval_batch_size or batch,
        ))


class FinetuneConfig(TrainConfig):
    """Supervised finetuning of a base model (a forgetless run directory or any HF causal LM)."""

    base: str = Field(description="base model: forgetless run dir, HF checkpoint dir or hub name")
    task: str = Field(description="SFT task: a name, a data file (.jsonl .json .parquet .csv) or hf:NAME "
                                  "(see forgetless.data.load_task and docs/data.md)")
    columns: dict[str, str] | None = Field(
        None, description="rename the data's columns to the format's: {data column: format column}, "
                          "or 'question=prompt,reply=completion'")
    method: Literal["full", "lora"] = Field("full", description="full finetuning or LoRA")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (default 2 x rank)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    lora_targets: list[str] | None = Field(None, description="module names (default: every linear but the head)")
    merge: bool = Field(True, description="save LoRA checkpoints merged into the base weights")
    train_n: int | None = Field(None, ge=1, description="training records used (default: all)")
    eval_n: int = Field(256, ge=1, description="held-out task records for the learning loss")
    task_seed: int = Field(0, ge=0, description="seed choosing the task's records (not their order)")
    accuracy: bool = Field(False, description="also measure exact-match accuracy of greedy answers")
    accuracy_n: int = Field(64, ge=1, description="held-out records generated for accuracy")
    max_new_tokens: int = Field(32, ge=1, description="generation length for accuracy")
    forget_corpus: str | None = Field(None, description="corpus of the forgetting sample (default: the base's)")
    forget_tokenizer: str | None = Field(None, description="tokenizer spec of that corpus (default: the base's)")
    forget_vocab_size: int | None = Field(None, ge=2, description="BPE size of that corpus (default: the base's)")
    forget_seq_len: int | None = Field(None, ge=2, description="sequence length of the forgetting sample")
    forget_balance: bool | None = Field(
        None, description="equal tokens from each source of the reference (prose, code) (default: on for "
                          "bases forgetless did not pretrain, when forget_corpus is not given)")

    @field_validator("columns", mode="before")
    @classmethod
    def _parse_columns(cls, v: Any) -> dict[str, str] | None:
        from forgetless.data.user_data import parse_columns

        return parse_columns(v) or None

    @model_validator(mode="after")
    def _lora_fields_need_lora(self) -> FinetuneConfig:
        if self.method == "full" and self.lora_targets:
            raise ValueError("lora_targets is set but method is 'full'; allowed: method 'lora'")
        return self

    def resolved(self, base_info: dict[str, Any]) -> FinetuneConfig:
        """Every None filled. `base_info` describes the base (see finetune.describe_base)."""
        small = _small(base_info.get("model"))
        lora = self.method == "lora"
        steps = self.steps or (300 if small else 800)
        eval_every = self.eval_every or min(steps, 50 if small else 200)
        batch = self.batch_size or (32 if small else 128)
        return self.model_copy(update=dict(
            optimizer=self.optimizer or base_info.get("optimizer") or "adamw",
            lr=self.lr or (1e-3 if lora else 1e-4),
            weight_decay=0.0 if self.weight_decay is None else self.weight_decay,
            seq_len=self.seq_len or (128 if small else 1024), batch_size=batch, steps=steps,
            dropout=0.1 if self.dropout is None else self.dropout,
            eval_every=eval_every, save_every=self.save_every or eval_every,
            eval_batch_size=self.eval_batch_size or batch,
            lora_alpha=(self.lora_alpha or 2.0 * self.lora_rank) if lora else self.lora_alpha,
            forget_corpus=self.forget_corpus or base_info.get("corpus") or "stdlib",
            # always the model's own tokenizer (the checkpoint holds it): a BPE trained on the
            # reference text would feed the model ids of another vocabulary
            forget_tokenizer=self.forget_tokenizer or base_info.get("checkpoint") or base_info.get("tokenizer"),
            forget_balance=(not self.forget_corpus and not base_info.get("corpus"))
            if self.forget_balance is None else self.forget_balance,
            forget_vocab_size=self.forget_vocab_size or base_info.get("vocab_size") or 8192,
            forget_seq_len=self.forget_seq_len or base_info.get("seq_len") or self.seq_len or (128 if small else 1024),
        ))


def format_validation_error(err: ValidationError) -> str:
    """One line per bad field: 'field: message' (pydantic's own text is verbose)."""
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            model = err.title
            allowed = {"PretrainConfig": PretrainConfig, "FinetuneConfig": FinetuneConfig}.get(model, TrainConfig)
            msg = f"unknown field; allowed: {', '.join(allowed.model_fields)}"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{field}: {msg}")
    return "\n".join(lines)
