import os
import sys

# the CPU is shared: spinning OpenMP threads make torch 10-50x slower under contention
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, MODELS)
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def models_dir():
    return MODELS
