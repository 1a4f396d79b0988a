"""Stochastic samplers from a data prediction: Euler and Heun ancestral, DPM-Solver++(2M) SDE and (3M) SDE.

Like the deterministic solvers of :mod:`diffflow_score.dpm` they need the flow's ``denoise`` (the EDM denoiser
``D``, ``E[y | x_t]``) and ``schedule`` (``alpha``, ``sigma = std / alpha``, ``time_of``), every parameterisation
of the ``score`` flow, and work on the VE-scaled particles ``y = x_t / alpha(t)`` at noise level ``sigma``; they
never call the flow's drift, so its ``mode`` (``ode`` or ``sde``) does not matter. Every draw comes from the
solve's generator (:class:`~diffflow_core.SamplingContext`), so a seed fixes the samples; k-diffusion's SDE
samplers draw from a Brownian tree instead, which only makes the noise of two different grids agree.

``eta`` scales the injected noise (k-diffusion's ``eta``, default 1: the full ancestral / reverse-SDE noise); at
``eta = 0`` each sampler is its deterministic counterpart, whose convergence order is the declared ``order``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.interfaces import Evaluator, Flow
from diffflow_core.tensors import draw_noise
from diffflow_score.dpm import _DataPrediction

__all__ = ["EulerAncestral", "HeunAncestral", "DPMSolverPP2MSDE", "DPMSolverPP3MSDE"]


class _Stochastic(_DataPrediction):
    """What the four share: ``eta``, a stochastic flow accepted (they use ``denoise`` only) and the noise draw."""

    stochastic = True

    def __init__(self, eta: float = 1.0) -> None:
        super().__init__()
        self.eta = check.non_negative("eta", eta)


class _Ancestral(_Stochastic):
    """An ancestral step (DDPM's, Ho et al. 2020 eq 6-7, in DDIM's eta family, Song et al. 2021 eq 16, written in
    sigma): from ``sigma_s`` to ``sigma_t`` a deterministic step of the PF-ODE ``dy/dsigma = (y - D)/sigma`` to
    ``sigma_down`` then fresh noise of std ``sigma_up``, with ``sigma_up = min(sigma_t, eta sigma_t sqrt(1 -
    sigma_t^2 / sigma_s^2))`` and ``sigma_down = sqrt(sigma_t^2 - sigma_up^2)`` so the total noise is
    ``sigma_t`` again (k-diffusion's ``get_ancestral_step``). At eta = 1 the step is ``sigma_down = sigma_t^2 /
    sigma_s``. Into sigma = 0 no noise is added. Subclasses give the deterministic step :meth:`_ode_step`."""

    def _ode_step(self, drift: Evaluator, y: Tensor, t0: Tensor, sigma0: Tensor, sigma_down: Tensor,
                  denoised: Tensor) -> Tensor:
        raise NotImplementedError

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        schedule = drift.flow.schedule
        sigma0, sigma1 = schedule.sigma(t0), schedule.sigma(t1)
        sigma_up = torch.minimum(sigma1, self.eta * sigma1 * torch.sqrt(1 - (sigma1 / sigma0) ** 2))
        sigma_down = torch.sqrt(sigma1 ** 2 - sigma_up ** 2)
        y = x / schedule.alpha(t0)
        y = self._ode_step(drift, y, t0, sigma0, sigma_down, self._denoised(drift, y, t0))
        if float(sigma1) > 0:
            y = y + sigma_up * draw_noise(y.shape, drift.generator, y)
        return schedule.alpha(t1) * y


class EulerAncestral(_Ancestral):
    """k-diffusion's ``euler_ancestral``: an Euler step of the PF-ODE in sigma to ``sigma_down`` (which is DDIM's
    first-order exponential step there), then the ancestral noise; one evaluation per step."""

    order = 1

    def _ode_step(self, drift: Evaluator, y: Tensor, t0: Tensor, sigma0: Tensor, sigma_down: Tensor,
                  denoised: Tensor) -> Tensor:
        return self._first_order(y, sigma0, sigma_down, denoised)


class HeunAncestral(_Ancestral):
    """Heun's (trapezoid) step of the PF-ODE in sigma to ``sigma_down`` (EDM's Algorithm 1 step), then the
    ancestral noise; two evaluations per step, one into sigma = 0 where the correction is skipped (EDM's rule)."""

    order = 2
    evaluations_per_step = 2

    def nfe(self, steps: int, flow: Flow) -> int:
        """Two evaluations per step; ``sigma_down`` is 0 only when the step ends at 0, a singular end."""
        return 2 * steps - (1 if flow.singular_end else 0)

    def _ode_step(self, drift: Evaluator, y: Tensor, t0: Tensor, sigma0: Tensor, sigma_down: Tensor,
                  denoised: Tensor) -> Tensor:
        slope = (y - denoised) / sigma0
        euler = y + (sigma_down - sigma0) * slope
        if float(sigma_down) == 0:
            return euler
        schedule = drift.flow.schedule
        t_down = schedule.time_of(sigma_down)
        slope_down = (euler - self._denoised(drift, euler, t_down)) / sigma_down
        return y + (sigma_down - sigma0) * 0.5 * (slope + slope_down)


class _MultistepSDE(_Stochastic):
    """DPM-Solver++'s multistep SDE solvers (Lu et al. 2022b, "SDE-DPM-Solver++", as k-diffusion's ``dpmpp_2m_sde``
    and ``dpmpp_3m_sde``), in ``lambda = -log sigma`` with ``h = lambda_t - lambda_s`` and ``H = (1 + eta) h``.

    Holding ``D`` constant over the step, the reverse SDE whose noise is scaled by ``eta`` has the exact solution

        y_t = e^{-H} y_s + (1 - e^{-H}) D_s + sigma_t sqrt(1 - e^{-2 eta h}) z,       z ~ N(0, I)

    (at eta = 0 DPM-Solver++'s first-order step, eq 9 there; at eta = 1 the DDPM posterior mean and std). The
    multistep methods add :meth:`_correction`, a term from the ``D`` of earlier steps (kept in the solve's memory)
    that raises the order of the deterministic part. Into sigma = 0 the step is ``y = D``. One evaluation per step.
    """

    #: How many earlier data predictions the correction uses.
    history = 1

    def _correction(self, denoised: Tensor, past: list[tuple[float, Tensor]], h: float, big_h: float) -> Tensor:
        raise NotImplementedError

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        schedule = drift.flow.schedule
        sigma0, sigma1 = schedule.sigma(t0), schedule.sigma(t1)
        y = x / schedule.alpha(t0)
        denoised = self._denoised(drift, y, t0)
        past = drift.memory.setdefault("dpmpp-sde", [])  # (h of the step that followed, D), newest first
        if float(sigma1) == 0:
            return schedule.alpha(t1) * denoised
        h = math.log(float(sigma0) / float(sigma1))
        big_h = (1 + self.eta) * h
        y = math.exp(-big_h) * y - math.expm1(-big_h) * denoised
        if past:
            y = y + self._correction(denoised, past, h, big_h)
        if self.eta > 0:
            y = y + sigma1 * math.sqrt(-math.expm1(-2 * self.eta * h)) * draw_noise(y.shape, drift.generator, y)
        past.insert(0, (h, denoised))
        del past[self.history:]
        return schedule.alpha(t1) * y


class DPMSolverPP2MSDE(_MultistepSDE):
    """DPM-Solver++(2M) SDE, k-diffusion's ``dpmpp_2m_sde`` (its default ``midpoint`` form): the difference of the
    last two data predictions, scaled to the step, enters with the midpoint weight ``(1 - e^{-H}) / 2``:
    ``+ (1 - e^{-H}) / (2 r) (D_s - D_prev)``, ``r = h_prev / h`` (at eta = 0 DPM-Solver++(2M), Algorithm 2)."""

    order = 2

    def _correction(self, denoised: Tensor, past: list[tuple[float, Tensor]], h: float, big_h: float) -> Tensor:
        h_prev, denoised_prev = past[0]
        return -0.5 * math.expm1(-big_h) * (h / h_prev) * (denoised - denoised_prev)


class DPMSolverPP3MSDE(_MultistepSDE):
    """DPM-Solver++(3M) SDE, k-diffusion's ``dpmpp_3m_sde``: ``D`` extrapolated in lambda by the divided differences
    of the last three data predictions, integrated against the exponential integrator's ``phi_2(H) = 1 - (1 -
    e^{-H})/H`` and ``phi_3(H) = phi_2 / H - 1/2`` (DPM-Solver++ §3.3, the third-order multistep rule): ``+ phi_2
    D1 - phi_3 D2``, with ``D1``, ``D2`` the first and second differences in units of ``h``; with only one
    earlier prediction the second-order ``+ phi_2 (D_s - D_prev) / r``. The first step has no history and is
    first order, and its ``O(h^2)`` local error is never repaired, so the global order is 2 (as for ``lms``); the
    third-order rule lowers the error constant of every later step."""

    order = 2
    history = 2

    def _correction(self, denoised: Tensor, past: list[tuple[float, Tensor]], h: float, big_h: float) -> Tensor:
        phi_2 = math.expm1(-big_h) / big_h + 1
        (h_1, denoised_1) = past[0]
        first_newest = (denoised - denoised_1) * (h / h_1)
        if len(past) == 1:
            return phi_2 * first_newest
        (h_2, denoised_2) = past[1]
        r0, r1 = h_1 / h, h_2 / h
        first_older = (denoised_1 - denoised_2) / r1
        second = (first_newest - first_older) / (r0 + r1)
        first = first_newest + second * r0
        return phi_2 * first - (phi_2 / big_h - 0.5) * second
