"""Explicit midpoint rule (RK2): ``x1 = x0 + dt v(x0 + dt/2 v(x0, t0), t0 + dt/2)``.

Only :meth:`step`, the declared ``order`` and the evaluations per step are written here; the grid loop, NFE
counting, NaN/Inf checks, trajectory recording and the rejection of stochastic flows come from
:class:`diffflow_core.Solver`.
"""
from __future__ import annotations

from torch import Tensor

from diffflow_core import Evaluator, Solver

__all__ = ["Midpoint"]


class Midpoint(Solver):
    """Second-order explicit midpoint method, two drift evaluations per step."""

    order = 2
    evaluations_per_step = 2

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        dt = t1 - t0
        half = x + 0.5 * dt * drift.velocity(x, t0)
        return x + dt * drift.velocity(half, t0 + 0.5 * dt)
