"""torchdiffeq's adaptive solvers behind the diffflow Solver contract (``Solver.adaptive``).

Each grid interval is one ``torchdiffeq.odeint`` call from ``t0`` to ``t1`` on the smoothed drift, so the solve
passes through every grid point as diffflow's own ``dopri5`` does, and every evaluation torchdiffeq makes goes
through the solve's :class:`~diffflow_core.Evaluator` and is counted in ``Solution.nfe``. Differences from
:mod:`diffflow_solvers.adaptive`: torchdiffeq measures the error as one RMS over the whole batch (not the worst
particle) and chooses a fresh first step in every interval. A last interval into a singular end (EDM's sigma = 0)
is one Euler step, as there.
"""
from __future__ import annotations

import torch
import torchdiffeq
from torch import Tensor

from diffflow_core import Evaluator, Solver
from diffflow_core import validation as check

__all__ = ["TorchDiffEq", "METHODS"]

#: torchdiffeq's adaptive methods and the order of the solution each propagates (its tableau's higher order).
METHODS = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}


class TorchDiffEq(Solver):
    """``torchdiffeq.odeint(method=method, rtol=rtol, atol=atol)`` over each grid interval; ``max_steps`` caps the
    steps torchdiffeq may take in one interval (its ``max_num_steps``)."""

    adaptive = True

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int = 10_000) -> None:
        super().__init__()
        self.method = check.one_of("method", method, METHODS)
        self.rtol = check.number("rtol", rtol, 0.0, 1.0, low_open=True, high_open=True)
        self.atol = check.positive("atol", atol)
        self.max_steps = check.positive_int("max_steps", max_steps)

    @property
    def order(self) -> int:  # type: ignore[override]
        return METHODS[self.method]

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        if drift.last and drift.flow.singular_end:  # the drift may not be evaluated at t1
            return x + (t1 - t0) * drift.velocity(x, t0)
        path = torchdiffeq.odeint(lambda t, y: drift.velocity(y, t), x, torch.stack([t0, t1]), rtol=self.rtol,
                                  atol=self.atol, method=self.method, options={"max_num_steps": self.max_steps})
        return path[-1]
