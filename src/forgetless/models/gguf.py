"""A GGUF file (llama.cpp's format, in which many small public models ship) as a Hugging Face
checkpoint: transformers reads and dequantises it (it needs the `gguf` package), and the weights
are written as model.safetensors beside the tokenizer and its chat template.

forgetless itself reads only Hugging Face checkpoints, so a GGUF file is converted once:
`forgetless convert model.gguf --out ckpt`, then `forgetless fingerprint ckpt` and the rest. The
weights are the dequantised values (a 4-bit file gives weights on its 4-bit grid, which the
fingerprint's round-trip tests cover), in float32 unless asked otherwise.
"""

from __future__ import annotations

from pathlib import Path

from forgetless.errors import BadValue, CorruptCheckpoint, NoCheckpoint, UserError

GGUF_MAGIC = b"GGUF"


class MissingGguf(UserError):
    """Reading a GGUF file needs the `gguf` package, which forgetless does not require."""


def check_gguf(path: str | Path) -> Path:
    """The path, if it is a GGUF file (by its magic bytes); NoCheckpoint or CorruptCheckpoint
    naming it otherwise."""
    path = Path(path)
    if not path.is_file():
        raise NoCheckpoint(f"no such GGUF file: {path}")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CorruptCheckpoint(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    return path


def convert_gguf(path: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Write the GGUF file `path` as a Hugging Face checkpoint in `out` (model.safetensors, config,
    tokenizer); returns `out`. The config keeps no trace of the quantisation: the checkpoint is an
    ordinary one, finetuned and saved like any other."""
    import torch
    import transformers

    from forgetless.models.loading import NO_CODE, _as_dtype, quiet

    try:
        torch_dtype = _as_dtype(dtype)
    except ValueError as err:
        raise BadValue(f"--dtype: {err}") from None
    path, out = check_gguf(path), Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty: give a new directory")
    try:
        import gguf  # noqa: F401  (transformers imports it itself; checked here for a clear message)
    except ImportError:
        raise MissingGguf("reading a GGUF file needs the gguf package: pip install 'forgetless[gguf]' "
                          "(or pip install gguf)") from None
    kwargs = {"gguf_file": path.name, **NO_CODE}
    with quiet():
        tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, **kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch_dtype, **kwargs)
    # transformers marks a model read from GGUF as quantised and refuses to save it; its weights
    # are already plain dequantised tensors, so the marks are dropped.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    with quiet(), torch.no_grad():
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return out
