"""Explicit midpoint rule (RK2): ``x1 = x0 + dt v(x0 + dt/2 v(x0, t0), t0 + dt/2)``.

Only :meth:`step` and the declared ``order`` are written here; the grid loop, NFE counting, NaN/Inf checks,
trajectory recording and the rejection of stochastic flows come from :class:`diffflow_core.Solver`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffflow_core import Flow, Smoother, Solver

__all__ = ["Midpoint"]


class Midpoint(Solver):
    """Second-order explicit midpoint method, two drift evaluations per step."""

    order = 2

    def step(self, flow: Flow, smoother: Smoother, x: Tensor, t0: Tensor, t1: Tensor, *,
             generator: torch.Generator | None, last: bool) -> Tensor:
        dt = t1 - t0
        half = x + 0.5 * dt * self._velocity(flow, smoother, x, t0)
        return x + dt * self._velocity(flow, smoother, half, t0 + 0.5 * dt)
