"""EDM's closed-form Gaussian problem for measuring solver orders on EDM's decreasing rho-grid, beside the
kernel kit's generic pieces (:mod:`diffflow_core.testing`: ``Problem``, ``decay_problem``, ``fitted_order``,
re-exported here for existing imports).

A solver's order is measured, not asserted: :func:`fitted_order` solves a problem with an exact solution at
several step counts and fits the slope of ``log(error)`` against ``log(steps)``; a method of order ``p`` gives
a slope of about ``-p``. The problems run in float64 so round-off stays far below the discretisation error.
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffflow_core.interfaces import Flow
from diffflow_core.testing import Decay, Problem, decay_problem, fitted_order, fitted_slope

__all__ = ["Problem", "Decay", "EDMGaussian", "decay_problem", "edm_gaussian_problem", "fitted_slope",
           "fitted_order"]


class EDMGaussian(Flow):
    """EDM's probability-flow ODE in sigma for data ``N(0, s^2)`` (SPEC §2.11.1).

    The ideal denoiser is ``D(x; sigma) = s^2 x / (s^2 + sigma^2)`` and the PF-ODE ``dx/dsigma = (x - D)/sigma``
    (SPEC §2.6); its exact solution is ``x(sigma) = x(smax) sqrt((s^2 + sigma^2) / (s^2 + smax^2))``.
    """

    def __init__(self, s: float = 0.5) -> None:
        super().__init__()
        self.s = float(s)

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.s ** 2 * x / (self.s ** 2 + sigma ** 2)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return (x - self.denoise(x, t)) / t

    def exact(self, x_start: Tensor, sigma_start: float, sigma_end: float) -> Tensor:
        return x_start * ((self.s ** 2 + sigma_end ** 2) / (self.s ** 2 + sigma_start ** 2)) ** 0.5


def edm_gaussian_problem(s: float = 0.5, sigma_max: float = 80.0, sigma_min: float = 0.002,
                         rho: float = 7.0) -> Problem:
    """The EDM Gaussian PF-ODE from ``sigma_max`` down to ``sigma_min > 0`` on EDM's rho-grid (decreasing)."""
    from diffflow_solvers.grids import edm

    flow = EDMGaussian(s)
    x0 = torch.tensor([[80.0], [-40.0], [10.0]], dtype=torch.float64)

    def grid(steps: int) -> Tensor:
        return edm(steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, append_zero=False,
                   dtype=torch.float64)

    return Problem(flow, x0, grid, flow.exact(x0, sigma_max, sigma_min))
