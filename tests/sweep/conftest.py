"""Shared pieces of the sweep tests: a small real corpus (the stdlib one takes ~40 s to tokenise)."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> str:
    """About 1 MB of the standard library's own sources, as a folder corpus."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = tmp_path_factory.mktemp("corpus")
    for pkg in ("email", "json", "http", "logging", "urllib", "xml/dom", "concurrent/futures", "importlib"):
        for f in sorted((stdlib / pkg).glob("*.py")):
            if f.stat().st_size > 200:  # empty __init__ files are not documents
                shutil.copy(f, out / f"{pkg.replace('/', '_')}_{f.name}")
    return str(out)
