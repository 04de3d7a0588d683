"""Tokenizers: any Hugging Face tokenizer by name or path, or a byte-level BPE trained here.

The trained BPE is saved with `save_pretrained` (tokenizer.json + tokenizer_config.json), so every
checkpoint that carries it loads with `AutoTokenizer`. It is cached under
`cache_dir()/tokenizers/<hash>/`, the hash covering the corpus identity and every training setting,
so it is retrained only when one of them changes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from forgetless.errors import BadValue
from forgetless.untrusted import MAX_VOCAB, refuse_custom_code

from . import hub  # hub.hub_reachable looked up at call time (tests replace it)
from .cache import publish_dir, stable_hash
from .corpus import Corpus, iter_split

EOS, BOS, PAD = "<|endoftext|>", "<|bos|>", "<|pad|>"
SPECIAL_TOKENS = [EOS, BOS, PAD]  # ids 0, 1, 2 in every trained tokenizer
BPE_VERSION = 1  # bump when training changes, so old caches are not reused
DEFAULT_TRAIN_BYTES = 64_000_000  # BPE merges settle long before this; see docs/data.md


def tokenizer_hash(tokenizer) -> str:
    """Content hash of a fast tokenizer (its full JSON serialisation): equal hash, equal ids."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def load_tokenizer(name_or_path: str | os.PathLike):
    """A Hugging Face fast tokenizer from a local path or a hub name (cache only when offline)."""
    from transformers import AutoTokenizer

    refuse_custom_code(Path(name_or_path).expanduser())  # a tokenizer_config.json with auto_map
    # Offline, a hub name can only come from the local cache: say so at once, without retries.
    local_only = Path(name_or_path).expanduser().exists() or not hub.hub_reachable()
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local_only,
                                            trust_remote_code=False)
    except Exception as err:
        raise ValueError(
            f"tokenizer {str(name_or_path)!r} could not be loaded ({type(err).__name__}). Give a "
            "folder holding tokenizer.json, a hub name that is cached locally (e.g. 'gpt2' after "
            "one download), or tokenizer=None to train a BPE on the corpus.") from err
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"tokenizer {str(name_or_path)!r} is a slow (Python) tokenizer; "
                         "forgetless needs a fast one (a tokenizer.json)")
    return tok


def _training_texts(corpus: Corpus, val_fraction: float, max_bytes: int) -> Iterator[str]:
    # Train split only: the validation documents must stay unseen, by the tokenizer too.
    for doc in iter_split(corpus, "train", val_fraction, max_bytes=max_bytes):
        yield doc.text


def train_bpe(texts, vocab_size: int = 8192, min_frequency: int = 2):
    """Byte-level BPE (GPT-2 style: bytes mapped to printable characters, no unknown token).

    Starts from the 256 byte symbols plus the special tokens and merges the most frequent
    adjacent pair until `vocab_size` symbols exist or no pair occurs `min_frequency` times,
    so a tiny corpus can give fewer than `vocab_size` tokens: use `len(tokenizer)`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not 256 + len(SPECIAL_TOKENS) <= vocab_size <= MAX_VOCAB:  # far above: a Rust panic (SIGABRT)
        raise BadValue(f"vocab_size must be between {256 + len(SPECIAL_TOKENS)} (256 bytes + "
                       f"{len(SPECIAL_TOKENS)} special tokens) and {MAX_VOCAB:,}, got {vocab_size:,}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=BOS,
                                   pad_token=PAD, model_max_length=1_000_000)


def corpus_tokenizer(corpus: Corpus, corpus_hash: str, vocab_size: int, root: Path,
                     val_fraction: float, train_bytes: int = DEFAULT_TRAIN_BYTES):
    """The cached BPE for this corpus and these settings; trained (once) if missing."""
    from transformers import AutoTokenizer

    settings = {"corpus": corpus_hash, "vocab_size": vocab_size, "val_fraction": val_fraction,
                "train_bytes": train_bytes, "version": BPE_VERSION}
    final = root / "tokenizers" / stable_hash(settings)
    if not (final / "tokenizer.json").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tok = train_bpe(_training_texts(corpus, val_fraction, train_bytes), vocab_size)
        if len(tok) <= 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"corpus {corpus.spec!r} has no training text for the tokenizer; "
                             "check the corpus path and the validation fraction")
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        tok.save_pretrained(tmp)
        publish_dir(tmp, final)
    return AutoTokenizer.from_pretrained(str(final), trust_remote_code=False), final
