"""Closed-form velocity fields for Gaussian laws (SPEC §4.5): the optimal field from N(0, I) to N(m_c, S_c).

With independent pairs ``x_1 ~ N(0, I)``, ``x_2 ~ N(m, S)`` the path point ``x(t) = (1-t) x_1 + t x_2`` is
``N(t m, Sigma_t)``, ``Sigma_t = (1-t)^2 I + t^2 S``, and the optimal field ``E[x_2 - x_1 | x(t) = x]`` is
``m + (t S - (1-t) I) Sigma_t^{-1} (x - t m)`` (linear in x).
"""
import pytest
import torch
from torch import nn

from diffflow_velocity.flow import VelocityFlow


class GaussianField(nn.Module):
    """The optimal field of class ``y`` (class 0 for ``y=None`` and for the null label)."""

    def __init__(self, means: torch.Tensor, covs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("means", means)
        self.register_buffer("covs", covs)

    def forward(self, x, t, y=None):
        classes = self.means.shape[0]
        y = torch.zeros(x.shape[0], dtype=torch.long) if y is None else torch.where(y < classes, y, 0)
        m, s = self.means[y], self.covs[y]
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        tt = t.reshape(-1, 1, 1)
        sigma = (1 - tt) ** 2 * eye + tt ** 2 * s
        gain = torch.linalg.solve(sigma, tt * s - (1 - tt) * eye)  # commutes with sigma
        return m + (gain @ (x - t[:, None] * m)[..., None])[..., 0]


def spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.3 * torch.eye(d, dtype=torch.float64)


@pytest.fixture
def gaussian_flow():
    """``make(means [C, d], covs [C, d, d])`` -> a float64 velocity flow with the optimal field per class."""

    def make(means, covs):
        classes, d = means.shape
        conditional = classes > 1
        return VelocityFlow(network=GaussianField(means, covs), event_shape=(d,), conditional=conditional,
                            num_classes=classes if conditional else None)

    return make


def affine_map(transform, d: int):
    """``(M, b)`` of an affine ``transform`` on R^d, read off its images of 0 and the unit vectors."""
    probes = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
    out = transform(probes)
    return (out[1:] - out[0]).T, out[0]


@pytest.fixture(name="affine")
def affine_fixture():
    return affine_map


@pytest.fixture(name="spd")
def spd_fixture():
    return spd
