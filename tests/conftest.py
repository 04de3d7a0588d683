"""Suite-wide settings: a private cache, and few threads so the shared 2-core machine stays fair."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    # Tokenizers and shards built by tests never touch the user's ~/.cache/forgetless.
    if "FORGETLESS_TEST_CACHE" in os.environ:  # reuse between local runs when asked
        os.environ["FORGETLESS_CACHE"] = os.environ["FORGETLESS_TEST_CACHE"]
    else:
        os.environ["FORGETLESS_CACHE"] = str(tmp_path_factory.mktemp("forgetless-cache"))
    yield


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
