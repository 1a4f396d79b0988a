"""Fixed-grid solvers. Each declares its ``order``, its evaluations per step and whether it handles diffusion
(``stochastic``); the shared loop, NFE counting, NaN/Inf checks and recording live in :class:`diffflow_core.Solver`."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffflow_core import Evaluator, Flow, Solver
from diffflow_core.tensors import draw_noise, per_sample

__all__ = ["Euler", "Heun", "EulerMaruyama"]


class Euler(Solver):
    """``x <- x + (t1 - t0) v(x, t0)``; the smoother performs the move (a generator takes an optimiser step)."""

    order = 1

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        return drift.advance(x, t0, t1 - t0)


class Heun(Solver):
    """Explicit trapezoid (order 2). On a last step into a singular end (``flow.singular_end``, e.g. EDM's
    sigma = 0) the correction is skipped, as in EDM's sampler."""

    order = 2
    evaluations_per_step = 2

    def nfe(self, steps: int, flow: Flow) -> int:
        """Two evaluations per step, one fewer when the last correction into a singular end is skipped."""
        return 2 * steps - (1 if flow.singular_end else 0)

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        dt = t1 - t0
        v0 = drift.velocity(x, t0)
        x1 = x + dt * v0
        if drift.last and drift.flow.singular_end:
            return x1
        v1 = drift.velocity(x1, t1)
        return x + dt * 0.5 * (v0 + v1)


class EulerMaruyama(Solver):
    """``x <- x + v dt + g(t0) sqrt(|dt|) eps`` (weak order 1). Time may decrease (reverse-time SDEs
    written in decreasing time use ``|dt|`` for the noise). No noise is added on the last step when the
    flow ends at a singular point."""

    order = 1
    stochastic = True

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        dt = t1 - t0
        x = x + dt * drift.velocity(x, t0)
        g = drift.flow.diffusion(t0)
        if drift.last and drift.flow.singular_end:
            return x
        if not isinstance(g, Tensor) and g == 0:
            return x
        noise = draw_noise(x.shape, drift.generator, x)
        g = torch.as_tensor(g, dtype=x.dtype, device=x.device)
        if g.ndim == 1 and g.shape[0] == x.shape[0]:
            g = per_sample(g, x)
        return x + g * math.sqrt(abs(float(dt))) * noise
