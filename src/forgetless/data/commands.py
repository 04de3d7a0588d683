"""`forgetless data prepare` and `forgetless data tasks`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _tokenizer_folder(model: str) -> str:
    """Where finetune reads a base's tokenizer: the folder itself, a run directory's newest
    checkpoint, or a hub name as given."""
    path = Path(model).expanduser()
    if not path.exists():
        return model
    if not (path / "tokenizer_config.json").is_file():
        steps = sorted((path / "checkpoints").glob("step-*"))
        if not steps:
            raise ValueError(f"--model {model}: no tokenizer there (tokenizer_config.json) and no "
                             "checkpoints/step-*/; give the checkpoint folder")
        return str(steps[-1])
    return str(path)


def _as_finetune_feeds(model: str, records, seq_len: int | None):
    """(how it is rendered, [(the text finetune trains on, the part the loss falls on)]) per record,
    through the collator finetune uses (sft.SFTCollator): the chat template when the tokenizer has
    one, else prompt + response + EOS."""
    from transformers import AutoTokenizer

    from forgetless.data.sft import IGNORE_INDEX, SFTCollator

    folder = _tokenizer_folder(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except OSError as err:
        raise ValueError(f"--model {model}: its tokenizer could not be loaded ({err})") from None
    collator = SFTCollator(tokenizer, seq_len or 10**9)
    how = f"chat template of {folder}" if collator.chat else f"{folder} has no chat template: prompt + response + EOS"
    out = []
    for ids, labels in collator.encode(records):
        learned = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
        out.append((tokenizer.decode(ids), tokenizer.decode(learned)))
    return how, out


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
                                   "magicoder (datasets: NAME:FILE for a local file), or your own "
                                   "data: FILE.jsonl/.json/.parquet/.csv or hf:NAME."),
        split: str = typer.Option("train", help="train or validation (the held-out part)."),
        n: int = typer.Option(3, help="How many records to print."),
        seed: int = typer.Option(0),
        columns: str = typer.Option(None, help="Rename your data's columns to a format's: "
                                    "DATA_COLUMN=FORMAT_COLUMN[,...], e.g. question=prompt,"
                                    "reply=completion (as finetune --columns)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON record per line."),
        model: str = typer.Option(None, "--model", "--base", help="The base you will finetune (a "
                                  "checkpoint, a forgetless run directory or a hub name): each record "
                                  "is also shown as finetune feeds it, through that tokenizer's chat "
                                  "template when it has one, with the tokens the loss falls on."),
        seq_len: int = typer.Option(None, "--seq-len", min=2, help="Cut as finetune --seq-len does "
                                    "(default: no cut)."),
    ) -> None:
        """Print a few records of a finetuning task as training reads them: preview your own file
        (and its --columns mapping) before a finetune."""
        from forgetless.data import load_task, user_data

        try:
            records = load_task(name, split, n=n, seed=seed, columns=columns)
            if user_data.is_user_data(name) or Path(name).expanduser().is_file():
                # which format the columns (after --columns) were read as; errors came above
                table, where = user_data.read_table(name)
                mapping = user_data.parse_columns(columns)
                fmt = user_data.detect_format({mapping.get(c, c) for c in table.column_names}, where)
                typer.echo(f"{where}: {fmt} format, {len(table):,} records; columns "
                           f"{', '.join(table.column_names)}"
                           + (f" (renamed: {', '.join(f'{a}={b}' for a, b in mapping.items())})"
                              if mapping else ""), err=as_json)
            fed = _as_finetune_feeds(model, records[:n], seq_len) if model else None
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
            raise typer.BadParameter(str(err)) from None
        for i, rec in enumerate(records[:n]):
            if as_json:
                print(json.dumps({"prompt": rec.prompt, "response": rec.response,
                                  "answer": rec.answer,
                                  "messages": [list(m) for m in rec.messages or ()] or None,
                                  **({"rendered": fed[1][i][0], "learned": fed[1][i][1]} if fed else {})}))
            else:
                if fed:
                    print(f"----- as finetune feeds it ({fed[0]})\n{fed[1][i][0]}\n"
                          f"----- learned (the loss falls on these tokens)\n{fed[1][i][1]}")
                if rec.messages:
                    print("----- messages\n" + "\n".join(f"{role}: {text}" for role, text in rec.messages))
                print(f"----- prompt\n{rec.prompt}\n----- response\n{rec.response}")
                if rec.answer is not None:
                    print(f"----- answer\n{rec.answer}")
