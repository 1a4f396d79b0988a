"""Time grids. Each returns ``steps + 1`` points; grids may decrease (noise levels go down)."""
from __future__ import annotations

import torch
from torch import Tensor

from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import check_steps


def uniform(steps: int, start: float = 0.0, end: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``steps + 1`` equally spaced times from ``start`` to ``end`` (decreasing when ``end < start``)."""
    check_steps(steps)
    if start == end:
        raise ConfigError(f"start/end: expected different values, got {start} and {end}")
    return torch.linspace(start, end, steps + 1, dtype=torch.float64).to(dtype)


def edm(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
        append_zero: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """EDM's noise levels ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho`` (SPEC §2.6).

    With ``append_zero`` (the default) the grid has ``steps`` noise levels plus a final 0, i.e.
    ``steps + 1`` points; otherwise ``steps + 1`` levels from ``sigma_max`` to ``sigma_min``. The levels are
    computed in float64 and returned in ``dtype``.
    """
    check_steps(steps)
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(f"sigma_min/sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if rho <= 0:
        raise ConfigError(f"rho: expected a positive number, got {rho}")
    n = steps if append_zero else steps + 1
    if n == 1:
        levels = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        ramp = torch.linspace(0, 1, n, dtype=torch.float64)
        levels = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    if append_zero:
        levels = torch.cat([levels, levels.new_zeros(1)])
    return levels.to(dtype)
