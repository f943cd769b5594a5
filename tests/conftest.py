import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small batches on a shared 2-core machine: one torch thread is faster than two
    fighting over the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
