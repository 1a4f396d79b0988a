"""Test-wide settings: one torch thread per xdist worker (2 workers on 2 cores), fresh plugin registries."""
import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture
def fresh_plugins():
    """A plugin manager that rescans entry points, restored afterwards."""
    from diffflow_core import plugins

    saved = plugins._MANAGER
    plugins.reset()
    yield plugins
    plugins._MANAGER = saved


@pytest.fixture(autouse=True)
def _keep_one_thread():
    """Commands choose their own thread count (``--threads``); each test starts and ends on one thread."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
