"""The Ornstein-Uhlenbeck flow ``dx = -theta (x - mu) dt + sigma dW``.

Its law stays Gaussian with closed-form moments, which makes it the reference problem for solver tests:
``E[x_t] = mu + (m_0 - mu) e^{-theta t}`` and
``Var[x_t] = v_0 e^{-2 theta t} + sigma^2 (1 - e^{-2 theta t}) / (2 theta)``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffflow_core import Flow
from diffflow_core import validation as check

__all__ = ["OrnsteinUhlenbeck"]


class OrnsteinUhlenbeck(Flow):
    """Mean reversion to ``mu`` at rate ``theta``; ``sigma > 0`` adds a constant diffusion (an SDE)."""

    def __init__(self, theta: float = 1.0, mu: float = 0.0, sigma: float = 0.0,
                 event_shape: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.theta = check.positive("theta", theta, expected="a positive mean-reversion rate")
        self.mu = check.finite("mu", mu)
        self.sigma = check.non_negative("sigma", sigma, expected="a diffusion coefficient >= 0")
        self.event_shape = tuple(event_shape)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -self.theta * (x - self.mu)

    def diffusion(self, t: Tensor) -> float:
        """The constant ``sigma``: 0 makes the flow an ODE (``is_stochastic`` follows from this value)."""
        return self.sigma

    def mean(self, m0: Tensor | float, t: float) -> Tensor:
        """Closed-form ``E[x_t]`` from an initial mean ``m0``."""
        return self.mu + (_tensor(m0) - self.mu) * math.exp(-self.theta * t)

    def variance(self, v0: Tensor | float, t: float) -> Tensor:
        """Closed-form ``Var[x_t]`` from an initial variance ``v0``."""
        decay = math.exp(-2 * self.theta * t)
        return _tensor(v0) * decay + self.sigma ** 2 * (1 - decay) / (2 * self.theta)


def _tensor(value: Tensor | float) -> Tensor:
    """Tensors pass through; Python numbers become float64 scalars (closed forms are reference values)."""
    return value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)
