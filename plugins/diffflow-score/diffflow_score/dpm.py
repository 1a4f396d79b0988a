"""Exponential-integrator solvers of the probability-flow ODE from a data prediction: DDIM, DPM-Solver-2,
DPM-Solver++(2M) and UniPC (bh2).

They need more of a flow than its drift: ``denoise(x, t, context=)``, the data prediction ``E[y | x_t]`` (the
EDM denoiser ``D``), and a ``schedule`` of ``x_t = alpha(t) y + std(t) eps`` with ``alpha(t)``, ``sigma(t) =
std / alpha`` and its inverse ``time_of(sigma)``, as the ``score`` flow has (every parameterisation: EDM, VP,
VE). A flow without them is refused before any work.

All four work on the VE-scaled particles ``y_t = x_t / alpha(t)``, whose PF-ODE is EDM's ``dy/dsigma =
(y - D)/sigma`` (EDM eq 4 with s = 1), and in DPM-Solver's ``lambda = -log sigma`` (half the log-SNR). Its exact
solution from ``s`` to ``t`` is ``y_t = (sigma_t/sigma_s) y_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda
D dlambda`` (DPM-Solver++, Lu et al. 2022b, eq 8); the methods differ in how they approximate ``D`` along the
step. With ``h = lambda_t - lambda_s`` and ``sigma_t / sigma_s = e^{-h}``, the first-order step holding ``D``
constant is ``y_t = e^{-h} y_s + (1 - e^{-h}) D``. Into a grid end at sigma = 0 (EDM) it is ``y_t = D``, and
every solver here ends that way, as k-diffusion's samplers do.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Evaluator, Flow, Solver

__all__ = ["DDIM", "DPMSolver2", "DPMSolverPP2M", "UniPC"]


class _DataPrediction(Solver):
    """What the four share: the flow's requirements and the move between ``x`` and ``y = x / alpha``."""

    requires = ("denoise", "schedule")
    #: what the updates call on ``flow.schedule``: the score flow's ``x_t = alpha(t) (y + sigma(t) eps)``
    SCHEDULE = ("alpha", "sigma", "time_of")

    def check(self, flow) -> None:
        """Also refuse a flow whose ``schedule`` is not a score-type noise schedule (an NDM flow has a
        ``schedule`` of another kind), before any work."""
        super().check(flow)
        missing = [m for m in self.SCHEDULE if not callable(getattr(flow.schedule, m, None))]
        if missing:
            raise ConfigError(f"solver {type(self).__name__}: needs a noise schedule with {', '.join(self.SCHEDULE)} "
                              f"(the score flow's); flow {type(flow).__name__}'s {type(flow.schedule).__name__} has "
                              f"no {', '.join(missing)}")

    @staticmethod
    def _denoised(drift: Evaluator, y: Tensor, t: Tensor) -> Tensor:
        """``D`` at VE-scaled particles ``y`` and time ``t``: one evaluation of the flow's ``denoise``."""
        flow = drift.flow
        return drift.call(flow.denoise, flow.schedule.alpha(t) * y, t, context=drift.context)

    @staticmethod
    def _first_order(y: Tensor, sigma0: Tensor, sigma1: Tensor, denoised: Tensor) -> Tensor:
        """``y_t = e^{-h} y_s + (1 - e^{-h}) D``: DDIM, DPM-Solver-1 and DPM-Solver++(1) (Lu et al. 2022b eq 9)."""
        ratio = sigma1 / sigma0
        return ratio * y + (1 - ratio) * denoised


class DDIM(_DataPrediction):
    """Deterministic DDIM (Song et al. 2021, eq 12 with eta = 0), which is DPM-Solver-1: one ``denoise`` per step.

    In EDM's sigma-time (``alpha = 1``) it is exactly the Euler step of the PF-ODE, ``x + (sigma_t - sigma_s)
    (x - D)/sigma_s``; for a VP or VE schedule in ``t`` it is the exponential integrator, not Euler in ``t``.
    """

    order = 1

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        schedule = drift.flow.schedule
        y = x / schedule.alpha(t0)
        y = self._first_order(y, schedule.sigma(t0), schedule.sigma(t1), self._denoised(drift, y, t0))
        return schedule.alpha(t1) * y


class DPMSolver2(_DataPrediction):
    """DPM-Solver-2 (Lu et al. 2022a, Algorithm 1 with r1 = 1/2, noise prediction), k-diffusion's ``dpm_2``.

    A DDIM half step to the geometric mean ``sigma_m = sqrt(sigma_s sigma_t)`` (the midpoint in lambda), then the
    full step with the noise ``eps = (y - D)/sigma`` predicted there: ``y_t = y_s + (sigma_t - sigma_s) eps_m``.
    Two evaluations per step; into sigma = 0 (a singular end) only the first, as in EDM's Heun rule.
    """

    order = 2
    evaluations_per_step = 2

    def nfe(self, steps: int, flow: Flow) -> int:
        """Two evaluations per step, one fewer when the last step runs into a singular end."""
        return 2 * steps - (1 if flow.singular_end else 0)

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        schedule = drift.flow.schedule
        sigma0, sigma1 = schedule.sigma(t0), schedule.sigma(t1)
        y = x / schedule.alpha(t0)
        denoised = self._denoised(drift, y, t0)
        if drift.last and drift.flow.singular_end:
            return schedule.alpha(t1) * self._first_order(y, sigma0, sigma1, denoised)
        sigma_mid = torch.sqrt(sigma0 * sigma1)
        y_mid = self._first_order(y, sigma0, sigma_mid, denoised)
        t_mid = schedule.time_of(sigma_mid)
        eps_mid = (y_mid - self._denoised(drift, y_mid, t_mid)) / sigma_mid
        return schedule.alpha(t1) * (y + (sigma1 - sigma0) * eps_mid)


class DPMSolverPP2M(_DataPrediction):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), k-diffusion's ``dpmpp_2m``: one evaluation per step.

    The step holds a linear extrapolation of ``D`` in lambda from the last two points:
    ``D' = (1 + 1/(2r)) D_s - D_prev / (2r)`` with ``r = h_prev / h``, in the first-order formula. The first step
    (no history) and a step into sigma = 0 (``h`` infinite) use ``D_s`` itself.
    """

    order = 2

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        schedule = drift.flow.schedule
        sigma0, sigma1 = schedule.sigma(t0), schedule.sigma(t1)
        y = x / schedule.alpha(t0)
        denoised = self._denoised(drift, y, t0)
        target = denoised
        previous = drift.memory.get("dpmpp-2m")
        if previous is not None and float(sigma1) > 0:
            sigma_prev, denoised_prev = previous
            r = torch.log(sigma_prev / sigma0) / torch.log(sigma0 / sigma1)
            target = (1 + 1 / (2 * r)) * denoised - denoised_prev / (2 * r)
        drift.memory["dpmpp-2m"] = (sigma0, denoised)
        return schedule.alpha(t1) * self._first_order(y, sigma0, sigma1, target)


def _unipc_weights(ratios: list[float], h: float, predictor: bool) -> list[float]:
    """UniPC's weights ``rho`` for the B(h) = e^h - 1 ("bh2") variant in data prediction (Zhao et al. 2023, §3.2,
    Theorem 3.1): ``ratios`` are ``r_k = (lambda_k - lambda_s) / h`` of the older points, ``1`` (the target point)
    appended; the weights solve ``R rho = b`` with ``R_jk = r_k^j`` and ``b_j = j! phi_{j+1}(-h) / B(-h)``,
    ``phi`` the exponential integrator's phi-functions built by the recurrence ``phi_{k+1} = (phi_k - 1/k!)/(-h)``.
    The predictor leaves out the target point (it has no ``D`` there yet); with one older point it uses 1/2."""
    order = len(ratios)
    hh = -h
    h_phi_k = math.expm1(hh) / hh - 1.0
    b_h = math.expm1(hh)
    factorial, rows, b = 1.0, [], []
    for j in range(1, order + 1):
        rows.append([r ** (j - 1) for r in ratios])
        b.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    matrix, rhs = np.array(rows), np.array(b)
    if predictor:
        return [0.5] if order == 2 else list(np.linalg.solve(matrix[:-1, :-1], rhs[:-1]))
    return [0.5] if order == 1 else list(np.linalg.solve(matrix, rhs))


class UniPC(_DataPrediction):
    """UniPC (Zhao et al. 2023), the multistep predictor-corrector UniP-p + UniC-p with B(h) = e^h - 1 ("bh2"),
    in data prediction: one evaluation per step.

    Step ``i`` evaluates ``D_i`` at the predicted ``x_i``, then (i > 0) the corrector UniC recomputes ``x_i`` from
    ``x_{i-1}`` with ``D_i`` added to the history (no new evaluation: ``D_i`` is kept although ``x_i`` moved), and
    the predictor UniP of order ``min(order, i + 1)`` takes ``x_i`` to ``x_{i+1}``. The corrector raises the order
    by one, so the method has order ``order + 1``. Into sigma = 0 the last predictor is first-order (``x = D``).
    """

    def __init__(self, order: int = 2) -> None:
        super().__init__()
        self.predictor_order = check.integer("order", order, 1, 3)

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.predictor_order + 1

    def _update(self, y: Tensor, lambdas: list[float], denoised: list[Tensor], lam_t: float,
                d_target: Tensor | None) -> Tensor:
        """One UniP (``d_target`` None) or UniC step from the newest history point ``(lambdas[0], denoised[0])``,
        older points after it, to ``lambda_t``: ``e^{-h} y + (1 - e^{-h}) D_0 - B(-h) sum_k rho_k D1_k`` with
        ``D1_k = (D_k - D_0) / r_k``."""
        lam_s, d_s = lambdas[0], denoised[0]
        h = lam_t - lam_s
        ratios = [(lam - lam_s) / h for lam in lambdas[1:]] + [1.0]
        slopes = [(d - d_s) / r for d, r in zip(denoised[1:], ratios)]
        if d_target is not None:
            slopes.append(d_target - d_s)
        out = math.exp(-h) * y - math.expm1(-h) * d_s
        if not slopes:
            return out
        weights = _unipc_weights(ratios, h, predictor=d_target is None)
        return out - math.expm1(-h) * sum(w * s for w, s in zip(weights, slopes))

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        schedule = drift.flow.schedule
        sigma0, sigma1 = schedule.sigma(t0), schedule.sigma(t1)
        memory = drift.memory.setdefault("unipc", {"lambdas": [], "denoised": [], "y": None, "order": 0})
        lambdas, history = memory["lambdas"], memory["denoised"]
        y = x / schedule.alpha(t0)
        denoised = self._denoised(drift, y, t0)
        lam0 = -math.log(float(sigma0))
        if memory["y"] is not None:  # UniC: correct x_i with D_i, using the previous step's order
            used = memory["order"]
            y = self._update(memory["y"], lambdas[:used], history[:used], lam0, denoised)
        lambdas.insert(0, lam0)
        history.insert(0, denoised)
        del lambdas[self.predictor_order:], history[self.predictor_order:]
        if float(sigma1) == 0:
            return schedule.alpha(t1) * denoised
        used = min(self.predictor_order, len(lambdas))
        memory["y"], memory["order"] = y, used
        y = self._update(y, lambdas[:used], history[:used], -math.log(float(sigma1)), None)
        return schedule.alpha(t1) * y
