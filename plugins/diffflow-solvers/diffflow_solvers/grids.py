"""Time grids. Each returns ``steps + 1`` points; grids may decrease (noise levels go down).

Two kinds, told apart by the function's ``space`` attribute (``diffflow_core.interfaces.resolve_grid``):

* **time grids** (``space = "time"``) are called ``grid(steps, start=, end=, **params)`` with the flow's own
  first and last time: ``uniform`` and ``power``. Every flow that takes a ``grid`` accepts them.
* **noise-level grids** (``space = "sigma"``) are called ``grid(steps, sigma_min=, sigma_max=, append_zero=,
  **params)`` and return decreasing noise levels ``sigma`` (the VE noise level ``std / alpha`` of
  ``x_t = alpha y + std eps``); a flow with a noise schedule maps them to its time (the score flow:
  ``Schedule.time_of``). ``edm`` (Karras rho), ``exponential`` (uniform in ``log sigma``, which is uniform in
  log-SNR ``= -2 log sigma``: ``log-snr`` names the same grid), ``polyexponential`` and ``vp``.

Levels are computed in float64 and returned in ``dtype``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import check_steps

__all__ = ["uniform", "power", "edm", "exponential", "polyexponential", "vp"]


def _space(kind: str) -> Callable:
    def mark(fn: Callable) -> Callable:
        fn.space = kind
        return fn
    return mark


@_space("time")
def uniform(steps: int, start: float = 0.0, end: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``steps + 1`` equally spaced times from ``start`` to ``end`` (decreasing when ``end < start``)."""
    check_steps(steps)
    if start == end:
        raise ConfigError(f"start/end: expected different values, got {start} and {end}")
    return torch.linspace(start, end, steps + 1, dtype=torch.float64).to(dtype)


@_space("time")
def power(steps: int, start: float = 0.0, end: float = 1.0, exponent: float = 2.0,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """``t_i = end + (start - end) (1 - i/steps)^exponent``: steps shrink towards ``end`` (the data end of a
    flow), ``exponent = 1`` is :func:`uniform`. NDM's default grid is this one from 1 to 0 with its
    ``time_power``; EDM's rho-grid is its limit for ``sigma_min -> 0`` with ``exponent = rho`` (EDM eq 5)."""
    ramp = uniform(steps, 1.0, 0.0, dtype=torch.float64)
    exponent = check.number("exponent", exponent, 1.0)
    return (end + (start - end) * ramp ** exponent).to(dtype)


def _levels(steps: int, sigma_min: float, sigma_max: float, append_zero: bool, dtype: torch.dtype,
            spacing: Callable[[Tensor], Tensor]) -> Tensor:
    """The shared frame of the noise-level grids: ``spacing(u)`` maps ``u`` from 0 to 1 (``n`` points) to levels
    from ``sigma_max`` to ``sigma_min``; ``n = steps`` followed by a final 0 with ``append_zero``, else
    ``steps + 1``. The first and last level are set to ``sigma_max`` and ``sigma_min`` exactly."""
    check_steps(steps)
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(f"sigma_min/sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    n = steps if append_zero else steps + 1
    if n == 1:
        levels = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        levels = spacing(torch.linspace(0, 1, n, dtype=torch.float64))
        levels[0], levels[-1] = sigma_max, sigma_min
    if append_zero:
        levels = torch.cat([levels, levels.new_zeros(1)])
    return levels.to(dtype)


@_space("sigma")
def edm(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
        append_zero: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """EDM's noise levels ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho`` (EDM eq 5,
    SPEC §2.6): uniform in ``sigma^(1/rho)``.

    With ``append_zero`` (the default) the grid has ``steps`` noise levels plus a final 0, i.e.
    ``steps + 1`` points; otherwise ``steps + 1`` levels from ``sigma_max`` to ``sigma_min``.
    """
    rho = check.positive("rho", rho)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _levels(steps, sigma_min, sigma_max, append_zero, dtype, lambda u: (high + u * (low - high)) ** rho)


@_space("sigma")
def exponential(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, append_zero: bool = True,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Levels uniform in ``log sigma``: equal steps ``h`` of DPM-Solver's ``lambda = -log sigma`` (half the
    log-SNR), the grid DPM-Solver calls ``logSNR`` (Lu et al. 2022, §3.4). ``edm`` as ``rho -> inf``."""
    return polyexponential(steps, sigma_min, sigma_max, rho=1.0, append_zero=append_zero, dtype=dtype)


@_space("sigma")
def polyexponential(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 1.0,
                    append_zero: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """``log sigma_i = log smin + (1 - i/(N-1))^rho (log smax - log smin)`` (k-diffusion's polyexponential):
    ``rho = 1`` is :func:`exponential`, ``rho > 1`` spends more steps at small sigma."""
    rho = check.positive("rho", rho)
    low, high = math.log(sigma_min), math.log(sigma_max)
    return _levels(steps, sigma_min, sigma_max, append_zero, dtype,
                   lambda u: torch.exp(low + (1 - u) ** rho * (high - low)))


@_space("sigma")
def vp(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, beta_min: float = 0.1,
       beta_d: float = 19.9, append_zero: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """The VP-SDE's levels ``sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)`` at uniform ``t`` (EDM
    Table 1, "VP" time steps), ``t`` running from ``t(sigma_max)`` to ``t(sigma_min)`` with ``t(sigma)`` the
    positive root of ``beta_d t^2 / 2 + beta_min t = log(1 + sigma^2)``."""
    beta_min = check.non_negative("beta_min", beta_min)
    beta_d = check.positive("beta_d", beta_d)

    def time_of(sigma: float) -> float:
        return (math.sqrt(beta_min ** 2 + 2 * beta_d * math.log1p(sigma ** 2)) - beta_min) / beta_d

    t_max, t_min = time_of(sigma_max), time_of(sigma_min)

    def spacing(u: Tensor) -> Tensor:
        t = t_max + u * (t_min - t_max)
        return torch.sqrt(torch.expm1(beta_d * t ** 2 / 2 + beta_min * t))

    return _levels(steps, sigma_min, sigma_max, append_zero, dtype, spacing)
