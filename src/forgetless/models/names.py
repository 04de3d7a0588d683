"""The model preset names, without torch or transformers: what a config validates and `--help`
lists. `PRESET_NAMES` reads `presets.PRESETS` once that is imported (a preset added there at run
time is accepted); until then, this fixed list of its keys."""

from forgetless.lazy import Names

PRESET_NAMES = Names("forgetless.models.presets:PRESETS", ("nano", "micro", "small", "medium", "gpt2-small"))

# The size class of each preset, which picks its model-dependent training defaults
# (train/config.py): cpu (the pilot's settings, docs/pilot.md), gpu (the gpu-quick preset's), paper
# (appendix A.1.1, GPT-2 small; also any model forgetless did not pretrain). A preset added to
# models/presets.py names its class here (tests/train/test_study_fields.py checks every one does).
SIZE_CLASSES = {"nano": "cpu", "micro": "cpu", "small": "cpu", "medium": "gpu", "gpt2-small": "paper"}
