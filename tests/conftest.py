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


# Every device this machine has: the CPU always, CUDA where a GPU is present. Tests of the paths that
# move to an accelerator take the `device` fixture, so on a GPU machine the same assertions run there
# too; the CPU-only CI machine runs them on the CPU alone.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(scope="module", params=DEVICES)  # module scope: module fixtures can take it too
def device(request) -> str:
    return request.param
