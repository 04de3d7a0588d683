"""`instruct`: instruction following over words and sentences of the pretraining corpus, in the
Alpaca template (the Alpaca analogue).

Words and sentences come from the English prose of the standard-library corpus (`pydoc_data`), so
the model has seen the material in pretraining and the finetune teaches only the instructions.
Every instruction has one exact answer (checked on the first output line).
"""

from __future__ import annotations

import functools
import random
import re

from .sft import SFTRecord
from .templates import alpaca_prompt

_FALLBACK = ("the value of an object is returned when the function is called with no arguments "
             "and a new list is built from the items of the sequence in order")


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(words, sentences): lowercase words of 3-10 letters, and plain sentences of 4-9 words."""
    try:
        from pydoc_data.topics import topics

        text = " ".join(topics[k] for k in sorted(topics))
    except ImportError:  # stripped Python builds; keep the task usable
        text = _FALLBACK
    words = sorted(set(re.findall(r"\b[a-z]{3,10}\b", text)))
    sentences = set()
    for raw in re.split(r"(?<=[.!?])\s+", text):
        sent = " ".join(raw.split()).rstrip(".")
        n = len(sent.split())
        if 4 <= n <= 9 and len(sent) <= 60 and re.fullmatch(r"[A-Za-z][A-Za-z ,']*", sent):
            sentences.add(sent)
    if not sentences:
        sentences.add(" ".join(_FALLBACK.split()[:6]))
    return tuple(words), tuple(sorted(sentences))


def _instruction(rng: random.Random) -> tuple[str, str, str]:
    """(instruction, input, answer)."""
    words, sentences = vocabulary()
    word, sent = rng.choice(words), rng.choice(sentences)
    kind = rng.randrange(9)
    if kind == 0:
        return "Spell the word backwards.", word, word[::-1]
    if kind == 1:
        return "Write the word in capital letters.", word, word.upper()
    if kind == 2:
        return "How many letters does the word have?", word, str(len(word))
    if kind == 3:
        return "How many words are in the sentence?", sent, str(len(sent.split()))
    if kind == 4:
        group = rng.sample(words, rng.randint(3, 5))
        return "Sort the words in alphabetical order.", ", ".join(group), ", ".join(sorted(group))
    if kind == 5:
        return "Give the last word of the sentence.", sent, sent.split()[-1].strip(",")
    if kind == 6:
        return "Reverse the order of the words.", sent, " ".join(sent.split()[::-1])
    if kind == 7:
        letters = "".join(w[0] for w in sent.split())
        return "Write the first letter of each word.", sent, letters
    return "Write the sentence in lowercase.", sent, sent.lower()


def generate(rng: random.Random) -> SFTRecord:
    instruction, given, answer = _instruction(rng)
    return SFTRecord(alpaca_prompt(instruction, given), answer, answer)


def check(record: SFTRecord, generated: str) -> bool:
    lines = generated.strip().splitlines()
    return bool(lines) and lines[0].strip() == (record.answer or "").strip()
