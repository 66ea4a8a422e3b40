"""One torch thread per test: on a small shared CI box, OpenMP threads waiting for a busy core spin and make tiny
convolutions many times slower. The previous setting is restored afterwards so other tests are unaffected."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
