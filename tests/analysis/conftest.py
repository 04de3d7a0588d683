"""Fixtures of the analysis tests."""

import pytest
import torch
from analysis_models import tiny_gpt2, tiny_llama
from transformers import GPT2LMHeadModel, LlamaForCausalLM


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: on the shared 2-core machine a second thread only adds contention
    # (measured 10x slower under load). Restored after each module for the rest of the suite.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def llama() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture
def gpt2() -> GPT2LMHeadModel:
    return tiny_gpt2()
