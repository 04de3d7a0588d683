"""forgetless.data: corpora, tokenizers, token shards, finetuning tasks, the corrupted corpus.

Public contract (docs/ARCHITECTURE.md); see docs/data.md for usage. Each name below is imported
from its module when first used (forgetless.lazy): importing the package costs nothing.
"""

from forgetless.lazy import lazy_package

# The older spelling of the corrupted corpus' names: still importable (forgetless.data.corrupt warns
# when they are read), not in __all__.
_OLD_NAMES = {"MemorisationSample": "corrupt", "memorisation_samples": "corrupt"}

__all__ = lazy_package(__name__, {
    **_OLD_NAMES,
    "cache_dir": "cache",
    "Document": "corpus", "open_corpus": "corpus",
    "MemorizationSample": "corrupt", "corrupt_blocks": "corrupt", "memorization_samples": "corrupt",
    "DatasetUnavailable": "hub",
    "PretrainData": "pretrain", "load_pretraining_data": "pretrain",
    "prepare_pretraining_data": "pretrain", "sample_batch": "pretrain",
    "TestReport": "sandbox", "run_tests": "sandbox",
    "IGNORE_INDEX": "sft", "SFTCollator": "sft", "SFTRecord": "sft",
    "TASKS": "tasks", "check_answer": "tasks", "check_answers": "tasks", "load_task": "tasks",
    "load_tokenizer": "tokenizer", "train_bpe": "tokenizer",
    "TaskDataUnavailable": "user_data", "load_user_task": "user_data",
})
__all__ = [name for name in __all__ if name not in _OLD_NAMES]
