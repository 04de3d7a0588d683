"""forgetless.data: corpora, tokenizers, token shards, finetuning tasks, the corrupted corpus.

Public contract (docs/ARCHITECTURE.md); see docs/data.md for usage.
"""

from .cache import cache_dir
from .corpus import Document, open_corpus
from .corrupt import MemorisationSample, corrupt_blocks, memorisation_samples
from .hub import DatasetUnavailable
from .pretrain import PretrainData, load_pretraining_data, prepare_pretraining_data, sample_batch
from .sandbox import TestReport, run_tests
from .sft import IGNORE_INDEX, SFTCollator, SFTRecord
from .tasks import TASKS, check_answer, check_answers, load_task
from .tokenizer import load_tokenizer, train_bpe
from .user_data import TaskDataUnavailable, load_user_task

__all__ = [
    "IGNORE_INDEX", "TASKS", "DatasetUnavailable", "Document", "MemorisationSample",
    "PretrainData", "SFTCollator", "SFTRecord", "TaskDataUnavailable", "TestReport", "cache_dir", "check_answer",
    "check_answers",
    "corrupt_blocks", "load_pretraining_data", "load_task", "load_tokenizer", "load_user_task",
    "memorisation_samples", "open_corpus", "prepare_pretraining_data", "run_tests",
    "sample_batch", "train_bpe",
]
