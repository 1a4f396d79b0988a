"""Discrete ancestral samplers of Neural Diffusion Models (SPEC §3.1), as kernel solvers.

Each step draws ``z_s ~ p_theta(z_s | z_t) = q(z_s | z_t, x = x_hat_theta(z_t, t))`` over the flow's grid
(t = 1 down to 0): ``ndm-ddpm`` uses DDPM's posterior variance (``eta = 1``, stochastic), ``ndm-ddim`` the
deterministic ``eta = 0`` member of the same family. One network evaluation per step (NFE = steps).
"""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from diffflow_core import Evaluator, Solver
from diffflow_core.errors import ConfigError

__all__ = ["AncestralDDPM", "AncestralDDIM"]


class _Ancestral(Solver):
    order = 1
    stochastic = True
    requires = ("ancestral_step",)
    eta: ClassVar[float] = 1.0

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        if not t1 < t0:
            raise ConfigError(f"times: ancestral sampling runs from t = 1 down to 0, got a step {float(t0)} -> {float(t1)}")
        return drift.call(drift.flow.ancestral_step, x, t0, t1, self.eta, drift.generator)


class AncestralDDPM(_Ancestral):
    """DDPM-style ancestral sampling: ``z_s = mean + sigma~_{s|t} eps``."""

    eta = 1.0


class AncestralDDIM(_Ancestral):
    """DDIM-style deterministic sampling: ``z_s`` is the ``eta = 0`` posterior mean."""

    eta = 0.0
