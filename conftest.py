"""Test-wide settings: one torch thread per xdist worker (2 workers on 2 cores). The ``fresh_plugins`` fixture
comes from the ``diffflow_core.testing`` pytest plugin."""
import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_one_thread():
    """Commands choose their own thread count (``--threads``); each test starts and ends on one thread."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
