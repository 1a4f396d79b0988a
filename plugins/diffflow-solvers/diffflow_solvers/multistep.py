"""Linear multistep solvers: variable-step Adams-Bashforth (k-diffusion's ``lms``).

One drift evaluation per step: step ``i`` evaluates ``d_i = v(x_i, t_i)`` and reuses the ``order - 1`` previous
drifts, kept in the solve's :attr:`~diffflow_core.Evaluator.memory`. Being explicit in the past only, it never
evaluates at ``t_{i+1}``, so a singular end (EDM's sigma = 0) needs no special rule.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import Tensor

from diffflow_core import Evaluator, Solver
from diffflow_core import validation as check

__all__ = ["LinearMultistep", "adams_bashforth_coefficients"]


def adams_bashforth_coefficients(times: Sequence[float], t_next: float) -> list[float]:
    """Weights ``c_j = int_{t_i}^{t_next} L_j(tau) dtau`` of the variable-step Adams-Bashforth method
    ``x_{i+1} = x_i + sum_j c_j d_{i-j}`` (Hairer, Norsett & Wanner I, §III.5), where ``times = (t_i, t_{i-1},
    ...)`` are the nodes of the past drifts, newest first, and ``L_j`` is the Lagrange basis polynomial that is 1
    at ``times[j]`` and 0 at the other nodes. With ``k`` nodes the integrand has degree ``k - 1``, so ``k``-point
    Gauss-Legendre quadrature is exact (k-diffusion integrates the same polynomial numerically)."""
    nodes = np.asarray(times, dtype=np.float64)
    t0 = float(nodes[0])
    points, weights = np.polynomial.legendre.leggauss(len(nodes))
    half = 0.5 * (t_next - t0)
    taus = t0 + half * (points + 1.0)
    coefficients = []
    for j in range(len(nodes)):
        others = np.delete(nodes, j)
        basis = np.prod((taus[:, None] - others) / (nodes[j] - others), axis=1)
        coefficients.append(float(half * (weights * basis).sum()))
    return coefficients


class LinearMultistep(Solver):
    """Adams-Bashforth of order ``order`` (2-4) on the grid as given, one evaluation per step (``lms``).

    Step ``i`` advances with the Adams-Bashforth weights of :func:`adams_bashforth_coefficients` over the last
    ``min(i + 1, order)`` drifts: the first steps have too little history and run at orders 1, 2, ... as in
    k-diffusion's ``sample_lms``. That start-up makes the first step an Euler step whose local error
    ``O(h^2)`` is not repaired later, so the global order is 2 whatever ``order`` is; a higher ``order`` lowers the
    error constant of every later step (the method's local truncation error is ``O(h^(order + 1))``).
    """

    #: The global order (the Euler first step bounds it); ``self.steady_order`` is the Adams-Bashforth order.
    order = 2

    def __init__(self, order: int = 4) -> None:
        super().__init__()
        self.steady_order = check.integer("order", order, 2, 4)

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        history = drift.memory.setdefault("lms", [])
        history.insert(0, (float(t0), drift.velocity(x, t0)))
        del history[self.steady_order:]
        weights = adams_bashforth_coefficients([t for t, _ in history], float(t1))
        return x + sum(w * d for w, (_, d) in zip(weights, history))
