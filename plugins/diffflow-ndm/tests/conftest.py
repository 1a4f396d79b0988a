"""Closed-form reverse models for NDM tests: a fixed ``x_hat`` and the exact Gaussian posterior mean."""
import pytest
import torch
from torch import nn

from diffflow_ndm.flow import NDMFlow


class Fixed(nn.Module):
    """``x_hat(z, t) = value`` (``[N, *shape]`` or broadcastable): makes the NELBO terms deterministic."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, z, t=None, y=None):
        return self.value.expand_as(z)


class GaussianMean(nn.Module):
    """Exact ``E[x | z_t]`` for data ``N(m, s^2 I)`` and ``F = x``: ``m + alpha s^2 / (alpha^2 s^2 + sigma^2) (z - alpha m)``."""

    def __init__(self, schedule, mean: torch.Tensor, std: float) -> None:
        super().__init__()
        self.schedule, self.std = schedule, std
        self.register_buffer("mean", mean)

    def forward(self, z, t, y=None):
        alpha, sigma = (c[:, None] for c in self.schedule(t.expand(z.shape[0]).contiguous()))
        gain = alpha * self.std ** 2 / (alpha ** 2 * self.std ** 2 + sigma ** 2)
        return self.mean + gain * (z - alpha * self.mean)


@pytest.fixture
def make_flow():
    """``make(network=..., transform=..., schedule=..., **kw)`` -> a float64 NDM flow on 2-D particles."""

    def make(network="mlp", **kwargs):
        kwargs.setdefault("event_shape", (2,))
        if isinstance(network, nn.Module):
            kwargs.setdefault("precondition", False)
        torch.manual_seed(0)
        return NDMFlow(network=network, **kwargs).double()

    return make


@pytest.fixture
def small_net():
    return {"name": "mlp", "hidden": 32, "depth": 2, "activation": "tanh", "fourier_scale": 2.0}


@pytest.fixture
def fixed():
    return Fixed


@pytest.fixture
def gaussian_mean():
    return GaussianMean
