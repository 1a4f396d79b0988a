"""Samplers specific to score flows: EDM's stochastic churn and NCSN's annealed Langevin dynamics.

Both are :class:`diffflow_core.Solver` s over the flow's own grid, so NFE counting, NaN checks and trajectory
recording come from the kernel loop; what each needs of a flow is declared (``requires``, :meth:`check`) and
refused before any work.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Evaluator, Flow, Solver
from diffflow_core.tensors import draw_noise
from diffflow_solvers.solvers import Heun

__all__ = ["EDMChurn", "AnnealedLangevin"]


class EDMChurn(Heun):
    """EDM's stochastic sampler (Karras et al. Algorithm 2; SPEC §2.6 "EDM churn").

    Before the Heun step from ``sigma_i`` the particles are re-noised to ``sigma_hat = (1 + gamma_i) sigma_i``
    by adding ``sqrt(sigma_hat^2 - sigma_i^2) S_noise eps``, with ``gamma_i = min(S_churn / N, sqrt(2) - 1)``
    when ``S_tmin <= sigma_i <= S_tmax`` (else 0); the Heun step then runs from ``sigma_hat`` to ``sigma_{i+1}``.
    ``s_churn = 0`` is the deterministic Heun sampler. Needs a flow whose time is sigma (``score`` with ``edm``).
    """

    stochastic = False

    def __init__(self, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                 s_noise: float = 1.0) -> None:
        super().__init__()
        self.s_churn = check.non_negative("s_churn", s_churn)
        self.s_tmin = check.non_negative("s_tmin", s_tmin)
        # infinity is EDM's default upper end (churn at every noise level above s_tmin), the one infinite setting
        self.s_tmax = math.inf if s_tmax == math.inf else check.number("s_tmax", s_tmax, self.s_tmin)
        self.s_noise = check.non_negative("s_noise", s_noise)

    def check(self, flow: Flow) -> None:
        """Churn re-noises in sigma, so the flow's time must be sigma: a ``score`` flow with ``edm``."""
        super().check(flow)
        if getattr(flow, "parameterisation", None) != "edm":
            raise ConfigError(f"solver edm-churn: needs a 'score' flow with parameterisation 'edm' (time = sigma), "
                              f"got {type(flow).__name__} {getattr(flow, 'parameterisation', '')}".rstrip())

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        steps = drift.context.steps
        gamma = min(self.s_churn / steps, math.sqrt(2) - 1) if self.s_tmin <= float(t0) <= self.s_tmax else 0.0
        if gamma > 0:
            t_hat = t0 * (1 + gamma)
            x = x + torch.sqrt(t_hat ** 2 - t0 ** 2) * self.s_noise * draw_noise(x.shape, drift.generator, x)
            t0 = t_hat
        return super().step(drift, x, t0, t1)


class AnnealedLangevin(Solver):
    """NCSN's annealed Langevin dynamics (SPEC §2.2 eq 4; Song & Ermon 2019).

    For each noise level ``sigma_i`` of the flow's grid after the first (the prior already has the largest),
    ``langevin_steps`` updates ``x <- x + (a_i / 2) s(x, sigma_i) + sqrt(a_i) z`` with ``a_i = step_ratio std_i^2``
    (eq 4: ``eps_i`` proportional to ``sigma_i^2``; std = sigma for VE). With ``denoise_last`` the
    result is Tweedie's denoised ``E[y | x]`` at the last level (one more evaluation). NFE = levels x langevin_steps (+ 1).
    """

    order = 1
    stochastic = True
    requires = ("score", "schedule", "denoise")

    def __init__(self, langevin_steps: int = 10, step_ratio: float = 1.0, denoise_last: bool = True) -> None:
        super().__init__()
        self.langevin_steps = check.positive_int("langevin_steps", langevin_steps)
        self.step_ratio = check.positive("step_ratio", step_ratio)
        self.denoise_last = bool(denoise_last)

    def nfe(self, steps: int, flow: Flow) -> int:
        """``langevin_steps`` score evaluations per level, plus the final denoising with ``denoise_last``."""
        return steps * self.langevin_steps + (1 if self.denoise_last else 0)

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        flow, context = drift.flow, drift.context
        a = self.step_ratio * flow.schedule.std(t1) ** 2
        for _ in range(self.langevin_steps):
            x = (x + 0.5 * a * drift.call(flow.score, x, t1, context=context)
                 + torch.sqrt(a) * draw_noise(x.shape, drift.generator, x))
        if drift.last and self.denoise_last:
            x = drift.call(flow.denoise, x, t1, context=context)
        return x
