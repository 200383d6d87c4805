import os
import sys

import pytest
import torch

# Tests import small helper modules (toy adapters, plugin utilities) from this folder.
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield
