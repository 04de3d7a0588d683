"""The model preset names, without torch or transformers: what a config validates and `--help`
lists. `PRESET_NAMES` reads `presets.PRESETS` once that is imported (a preset added there at run
time is accepted); until then, this fixed list of its keys."""

from forgetless.lazy import Names

PRESET_NAMES = Names("forgetless.models.presets:PRESETS", ("nano", "micro", "small", "medium", "gpt2-small"))
