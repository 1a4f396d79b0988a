"""Noise schedules of the three parameterisations, in one form: ``x_t = alpha(t) y + std(t) eps``.

Every schedule is the forward SDE ``dx = f(t) x dt + g(t) dW`` whose marginal given data ``y`` is
``N(alpha(t) y, std(t)^2 I)``. Its reverse-time SDE and probability-flow ODE (SPEC §1.7, §2.2 eqs 7-8) are

    reverse SDE:  dx = [f x - g^2 s(x, t)] dt + g dW      (integrated with decreasing t)
    PF-ODE:       dx = [f x - g^2 s(x, t) / 2] dt

with ``s`` the score of the marginal. ``sigma(t) = std / alpha`` is the equivalent VE noise level
(``x_t / alpha = y + sigma eps``), which conditions the networks of all three schedules alike.

* ``EDMSchedule``: time *is* sigma, ``alpha = 1``, ``f = 0``, ``g^2 = 2 sigma`` (SPEC §2.6; eq 7 with
  sigma(t) = t), grid the EDM rho-grid down to 0.
* ``VPSchedule``: continuous DDPM, ``beta(t) = beta_min + t (beta_max - beta_min)``, ``f = -beta/2``,
  ``g^2 = beta``, ``alpha = exp(-B/2)``, ``std = sqrt(1 - exp(-B))`` with ``B = int_0^t beta``; t in [eps, 1].
* ``VESchedule``: SMLD/NCSN, ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``, ``f = 0``,
  ``g^2 = d sigma^2/dt = 2 sigma^2 ln(sigma_max/sigma_min)``; t in [0, 1].
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.tensors import draw_noise

__all__ = ["Schedule", "EDMSchedule", "VPSchedule", "VESchedule", "SCHEDULES"]


def _check_range(name_min: str, low: float, name_max: str, high: float, floor: float = 0.0) -> None:
    for name, value in ((name_min, low), (name_max, high)):
        check.finite(name, value)
    if not floor < low < high:
        raise ConfigError(f"{name_min}/{name_max}: expected {floor} < {name_min} < {name_max}, got {low}, {high}")


class Schedule:
    """The forward process of one parameterisation; every method takes ``t`` as a tensor (any shape)."""

    #: The sampling grid ends at a point where the drift is singular (EDM's sigma = 0).
    singular_end = False
    #: Std of the prior ``N(0, prior_std^2 I)`` the reverse process starts from at ``t_max``.
    prior_std = 1.0

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def std(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """The equivalent VE noise level ``std / alpha``."""
        return self.std(t) / self.alpha(t)

    def time_of(self, sigma: Tensor) -> Tensor:
        """The time whose :meth:`sigma` is ``sigma`` (drift algebra maps clocks through it, diffflow_core.compose)."""
        raise NotImplementedError

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def time_grid(self, steps: int) -> Tensor:
        """``steps + 1`` sampling times from the prior end to the data end (float64)."""
        raise NotImplementedError

    def train_times(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """``n`` training times ``[n]`` (dtype/device of ``like``); EDM's objective draws its own sigmas."""
        raise NotImplementedError


class EDMSchedule(Schedule):
    """Karras et al.'s schedule: ``t = sigma``, data ``y + sigma eps`` (SPEC §2.6)."""

    singular_end = True

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        _check_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        check.positive("rho", rho)
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.prior_std = self.sigma_max

    def std(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def time_of(self, sigma: Tensor) -> Tensor:
        return sigma

    def g2(self, t: Tensor) -> Tensor:
        return 2 * t

    def time_grid(self, steps: int) -> Tensor:
        from diffflow_core.plugins import registry

        return registry("grids").get("edm")(steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                                            rho=self.rho, dtype=torch.float64)


class VPSchedule(Schedule):
    """Continuous DDPM (VP-SDE) with a linear ``beta(t)``, ``t`` in ``[eps, 1]``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> None:
        _check_range("beta_min", beta_min, "beta_max", beta_max)
        check.in_range("eps", eps, 0, 1, low_open=True, expected="the smallest time in (0, 1)")
        self.beta_min, self.beta_max, self.eps = float(beta_min), float(beta_max), float(eps)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.integral(t))

    def std(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self.integral(t)))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(torch.expm1(self.integral(t)))

    def time_of(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`: the root in t of ``B(t) = log(1 + sigma^2)``."""
        slope = self.beta_max - self.beta_min
        return (torch.sqrt(self.beta_min ** 2 + 2 * slope * torch.log1p(sigma ** 2)) - self.beta_min) / slope

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t)

    def time_grid(self, steps: int) -> Tensor:
        return torch.linspace(1.0, self.eps, steps + 1, dtype=torch.float64)

    def train_times(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        return self.eps + (1 - self.eps) * draw_noise((n,), generator, like, "uniform")


class VESchedule(Schedule):
    """SMLD / NCSN: geometric ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``t`` in ``[0, 1]``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        _check_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.prior_std = self.sigma_max

    def std(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def time_of(self, sigma: Tensor) -> Tensor:
        return torch.log(sigma / self.sigma_min) / self.log_ratio

    def g2(self, t: Tensor) -> Tensor:
        return 2 * self.log_ratio * self.std(t) ** 2

    def time_grid(self, steps: int) -> Tensor:
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)

    def train_times(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        return draw_noise((n,), generator, like, "uniform")


SCHEDULES = {"edm": EDMSchedule, "vp": VPSchedule, "ve": VESchedule}
