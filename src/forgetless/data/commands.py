"""`forgetless data prepare` and `forgetless data tasks`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Corpora, tokenizers, token shards and finetuning tasks.",
                           no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command()
    def prepare(
        corpus: str = typer.Option("stdlib", help="'stdlib', a folder, a .txt, 'file.jsonl:FIELD',"
                                   " 'file.parquet:COLUMN' or 'hf:NAME[:COLUMN]'."),
        tokenizer: str = typer.Option(None, help="A Hugging Face tokenizer (path or cached name); "
                                      "default: train a byte-level BPE on the corpus."),
        vocab_size: int = typer.Option(8192, help="Vocabulary of the trained BPE."),
        max_tokens: int = typer.Option(None, help="Cap on training tokens."),
        val_fraction: float = typer.Option(0.05, help="Share of documents held out (by hash)."),
        workers: int = typer.Option(None, help="Tokeniser processes (default: one per core)."),
        cache_dir: Path = typer.Option(None, help="Default: $FORGETLESS_CACHE or "
                                       "~/.cache/forgetless."),
    ) -> None:
        """Tokenise a corpus into cached train/val shards (instant when already cached)."""
        from forgetless.data import prepare_pretraining_data
        from forgetless.data.cache import cache_dir as default_cache
        from forgetless.data.cache import writable_dir

        # a cache that cannot be written is named before any work (CacheError: one line, code 2)
        if cache_dir is not None:
            writable_dir(cache_dir, "--cache-dir")
        else:
            default_cache()
        try:
            data = prepare_pretraining_data(corpus, tokenizer, vocab_size, cache_dir,
                                            val_fraction=val_fraction, max_tokens=max_tokens,
                                            workers=workers)
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
            raise typer.BadParameter(str(err)) from None
        meta = data.meta
        print(f"shards     {data.path}")
        print(f"tokenizer  {meta['tokenizer_path']} ({meta['vocab_size']} tokens, {meta['dtype']})")
        for split in ("train", "val"):
            s = meta[split]
            print(f"{split:<10} {s['tokens']:,} tokens in {s['documents']:,} documents "
                  f"({', '.join(f'{k} {v:,}' for k, v in s['sources'].items())})")

    @data_app.command()
    def tasks(
        name: str = typer.Argument("arith", help="arith, instruct, code, metamathqa, alpaca, "
                                   "magicoder (datasets: NAME:FILE for a local file)."),
        split: str = typer.Option("train", help="train or validation."),
        n: int = typer.Option(3, help="How many records to print."),
        seed: int = typer.Option(0),
        as_json: bool = typer.Option(False, "--json", help="One JSON record per line."),
    ) -> None:
        """Print a few records of a finetuning task."""
        from forgetless.data import load_task

        try:
            records = load_task(name, split, n=n, seed=seed)
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
            raise typer.BadParameter(str(err)) from None
        for rec in records[:n]:
            if as_json:
                print(json.dumps({"prompt": rec.prompt, "response": rec.response,
                                  "answer": rec.answer}))
            else:
                print(f"----- prompt\n{rec.prompt}\n----- response\n{rec.response}")
                if rec.answer is not None:
                    print(f"----- answer\n{rec.answer}")
