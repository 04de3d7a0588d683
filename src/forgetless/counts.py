"""Counts written the way people write them: 5M tokens, 200k, 1.5B (one parser for the training
configs and the study files)."""

from __future__ import annotations

import re
from typing import Any

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def parse_count(value: Any, field: str = "tokens", whole: bool = False) -> int:
    """'5M' -> 5_000_000, '200k' -> 200_000, '1.5B' -> 1_500_000_000; ints pass through. With
    `whole` (steps), a count with a fraction left ('10.5') is refused rather than rounded: a user
    who typed it meant something we cannot guess."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a count like 5M, 200k or 1000, got {value!r}")
    if isinstance(value, int):
        count = value
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        count = int(value)
    elif isinstance(value, float) and not abs(value) < 1e18:  # .inf, 1e400, nan
        raise ValueError(f"{field} must be a finite count like 5M, 200k or 1000, got {value!r}")
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbg]?)\s*", str(value).lower())
        if not match:
            raise ValueError(f"{field} must be a count like 5M, 200k or 1000, got {value!r}")
        number = float(match.group(1)) * _SUFFIX[match.group(2)]
        if not number < 1e18:  # 1e999 reads as inf: not a count
            raise ValueError(f"{field} must be a finite count like 5M, 200k or 1000, got {value!r}")
        if whole and not number.is_integer():
            raise ValueError(f"{field} must be a whole number, got {value!r}")
        count = round(number)
    if count <= 0:
        raise ValueError(f"{field} must be positive, got {value!r}")
    return count
