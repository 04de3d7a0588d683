"""Suite-wide settings: a private cache, and one torch thread so the shared 2-core machine stays fair."""

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


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the test models are tiny, and spare threads only spin on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
