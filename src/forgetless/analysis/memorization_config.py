"""The memorisation test's settings (paper §4.2, A.2), without torch: `forgetless memorization`
builds one, a study's `reproduce.memorization` holds one (sweep/study_fields.py), and the runner
(analysis/memorization_run.py) takes it.

Fields that are training settings (model preset, optimizer, lr, batches, steps, evaluation
interval, warm-up, weight decay, seed, corpus, vocabulary) carry the training configs' checks
(train/config_fields.setting); their defaults are this experiment's own (a corpus small enough
to be memorised, many epochs: the CPU pilot, docs/pilot.md). The dumped config is the cache key
of reproduce's results.json, so its fields and defaults are kept as they are.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgetless.train.config import PretrainConfig, TrainConfig
from forgetless.train.config_fields import check_model, check_optimizer, setting, setting_type

Lr = setting_type(TrainConfig, "lr")
Optimizer = setting_type(TrainConfig, "optimizer")


class MemorizationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    optimizers: list[Optimizer] = Field(default_factory=lambda: ["adamw", "muon", "sgd"], min_length=1)
    lrs: list[Lr] = Field(default_factory=lambda: [3e-3], min_length=1, description="grid; best clean accuracy kept")
    preset: str = setting(PretrainConfig, "model", default="nano")
    corpus: str = setting(PretrainConfig, "corpus")
    vocab_size: int = setting(PretrainConfig, "vocab_size", default=4096)
    n_tokens: int = Field(32768, ge=64, description="corpus size in tokens (small: it must be memorisable)")
    block_len: int = Field(64, ge=2, description="block length; each training sequence is one block")
    p: float = Field(0.5, description="share of blocks whose tokens are permuted")
    batch_size: int = setting(TrainConfig, "batch_size", default=16)
    steps: int = setting(TrainConfig, "steps", default=1500)
    eval_every: int = setting(TrainConfig, "eval_every", default=150)
    warmup: float = setting(TrainConfig, "warmup", default=0.05)
    weight_decay: float = setting(TrainConfig, "weight_decay", default=0.0)
    pairs: list[tuple[int, int]] = Field(default_factory=lambda: [(8, 8), (16, 16), (32, 32)])
    n_eval: int = Field(64, ge=1, description="evaluation blocks per split (clean, corrupted)")
    seed: int = setting(TrainConfig, "seed")
    device: str = Field("cpu", description="cpu, cuda, cuda:N or mps")

    _preset = field_validator("preset")(check_model)

    @field_validator("optimizers")
    @classmethod
    def _optimizers(cls, names: list[str]) -> list[str]:
        return [check_optimizer(n) for n in names]

    @field_validator("p")
    @classmethod
    def _p(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"p must be in (0, 1) so both clean and corrupted blocks exist, got {v}")
        return v

    @model_validator(mode="after")
    def _pairs_fit(self) -> MemorizationConfig:
        if not self.pairs:
            raise ValueError("pairs must hold at least one (prompt_len, gen_len)")
        bad = [(p, g) for p, g in self.pairs if p < 1 or g < 1 or p + g > self.block_len]
        if bad:
            raise ValueError(f"pairs {bad} must have prompt_len, gen_len >= 1 and prompt_len + gen_len "
                             f"<= block_len={self.block_len}")
        return self
