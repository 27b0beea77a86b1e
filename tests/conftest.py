"""Suite-wide settings.

Nearly every test works on small tensors, where torch's intra-op threads cost more than they give:
on the 2-core CI machine two threads ran small steps up to tens of times slower than one whenever
another process was busy. One thread keeps the suite fast and its timings steady.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
