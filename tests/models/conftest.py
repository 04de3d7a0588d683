import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these models are tiny, and spare threads only spin on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
