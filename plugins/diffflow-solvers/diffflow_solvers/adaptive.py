"""Adaptive embedded Runge-Kutta solvers: Dormand-Prince 5(4) (``dopri5``) and Bogacki-Shampine 3(2) (``bosh3``).

An embedded pair computes, from the same stages ``k_j = v(x + h sum_l a_jl k_l, t + c_j h)``, a solution of order
``p`` (weights ``b``, the one propagated: local extrapolation) and one of order ``p - 1`` (weights ``b_hat``). Their
difference ``e = h sum_j (b_j - b_hat_j) k_j`` estimates the local error of the lower-order one, ``O(h^p)``, and
the step-size controller keeps it within the tolerance (Hairer, Norsett & Wanner, *Solving ODEs I*, §II.4):

    err = max over particles of sqrt(mean_i (e_i / (atol + rtol max(|x_i|, |x_new_i|)))^2)      (II.4.11)
    accept when err <= 1;   h_new = h min(FAC_MAX, max(FAC_MIN, SAFETY err^(-1/p)))                (II.4.13)

The norm is the RMS over one particle's coordinates and the worst particle of the batch, so every particle meets
the tolerance (an RMS over the whole batch would let one particle of thousands go far off). Both pairs are FSAL
(first same as last): the last stage is ``v`` at the accepted point, which is the first stage of the next step, so
an accepted step costs ``stages - 1`` evaluations and a rejected one as many.

**Contract for adaptive solvers** (``Solver.adaptive``). The solver integrates from ``times[0]`` to ``times[-1]``
*through every grid point*: each grid interval is integrated adaptively and the step carries over to the next, so
``record=True`` trajectories and callbacks come at the grid points exactly. Give a two-point grid to let the
controller choose every step. The NFE is known only after the solve (``Solution.nfe``, every evaluation counted by
the kernel, rejected steps and the starting-step probe included); ``nfe(steps, flow)`` and ``steps_for`` raise a
ConfigError naming rtol/atol, so ``--nfe`` is refused before any work. A last interval into a singular end
(``flow.singular_end``, EDM's sigma = 0, where the drift may not be evaluated) is one Euler step, Heun's rule.

``adaptive=False`` is the fixed-step method of order ``p`` on the grid as given (``stages - 1`` evaluations per
step, no error estimate): its NFE is known in advance and its order is measurable by step refinement.
"""
from __future__ import annotations

import math
from fractions import Fraction as F
from typing import ClassVar

import torch
from torch import Tensor

from diffflow_core import Evaluator, Flow, Solver
from diffflow_core import validation as check
from diffflow_core.errors import ConfigError

__all__ = ["EmbeddedRungeKutta", "Dopri5", "Bosh3"]

#: Step-size controller constants of Hairer's DOPRI5 code (Solving ODEs I, §II.4 "Automatic step size control"):
#: aim at 0.9 of the tolerated error, and never shrink a step by more than 5x or grow it by more than 10x at once.
SAFETY, FAC_MIN, FAC_MAX = 0.9, 0.2, 10.0


class EmbeddedRungeKutta(Solver):
    """An explicit embedded, FSAL Runge-Kutta pair given by its Butcher tableau, with error control (module doc).

    Subclasses give ``nodes`` (``c``), ``coupling`` (the rows of ``a`` below the diagonal, one per stage after the
    first), ``weights`` (``b``, order :attr:`order`) and ``embedded`` (``b_hat``, order ``order - 1``); FSAL means
    the last row of ``coupling`` equals ``weights`` and the last node is 1.

    ``rtol``/``atol``: relative and absolute tolerance of the local error (II.4.11). ``min_step``: the smallest step
    (in the flow's time) the controller may take; asking for a smaller one raises an error naming it (the ODE is
    stiff or singular there); steps below the floating-point resolution of ``t`` are refused whatever
    ``min_step``. ``max_steps``: the most steps, accepted and rejected, of one solve. ``adaptive=False``: the
    fixed-step method on the given grid.
    """

    nodes: ClassVar[tuple[float, ...]]
    coupling: ClassVar[tuple[tuple[float, ...], ...]]
    weights: ClassVar[tuple[float, ...]]
    embedded: ClassVar[tuple[float, ...]]

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5, min_step: float = 0.0, max_steps: int = 10_000,
                 adaptive: bool = True) -> None:
        super().__init__()
        self.rtol = check.number("rtol", rtol, 0.0, 1.0, low_open=True, high_open=True)
        self.atol = check.positive("atol", atol)
        self.min_step = check.non_negative("min_step", min_step)
        self.max_steps = check.positive_int("max_steps", max_steps)
        self.adaptive = check.boolean("adaptive", adaptive)
        self.error_weights = tuple(b - e for b, e in zip(self.weights, self.embedded))

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        """Fixed-step mode: every stage but the last (its weight is 0: it only serves the error estimate)."""
        return len(self.nodes) - 1

    def nfe(self, steps: int, flow: Flow) -> int:
        """Fixed-step mode: ``stages - 1`` per step, one Euler evaluation for a last step into a singular end."""
        self._refuse_budget()
        return self.evaluations_per_step * steps - (self.evaluations_per_step - 1 if flow.singular_end else 0)

    # -- one step of the tableau ----------------------------------------------------------------------------
    def _stages(self, drift: Evaluator, x: Tensor, t: float, h: float, k1: Tensor, count: int) -> list[Tensor]:
        """The first ``count`` stages ``k_j`` of a step of size ``h`` from ``(x, t)``, given ``k_1 = v(x, t)``."""
        ks = [k1]
        for c, row in zip(self.nodes[1:count], self.coupling):
            increment = sum(a * k for a, k in zip(row, ks) if a != 0)
            ks.append(drift.velocity(x + h * increment, x.new_tensor(t + c * h)))
        return ks

    def _norm(self, e: Tensor, x: Tensor, x_new: Tensor) -> float:
        """The worst particle's RMS of ``e`` in units of ``atol + rtol max(|x|, |x_new|)`` (II.4.11)."""
        scale = self.atol + self.rtol * torch.maximum(x.abs(), x_new.abs())
        return float((e / scale).flatten(1).pow(2).mean(1).sqrt().max())

    def _first_stage(self, drift: Evaluator, x: Tensor, t0: Tensor) -> Tensor:
        """``v(x, t0)``: the previous accepted step's last stage when it ended at this very state (FSAL)."""
        fsal = drift.memory.get("fsal")
        if fsal is not None and fsal[0] is x:
            return fsal[1]
        return drift.velocity(x, t0)

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        if drift.last and drift.flow.singular_end:  # the drift may not be evaluated at t1: an Euler step
            return x + (t1 - t0) * self._first_stage(drift, x, t0)
        if not self.adaptive:
            h = float(t1 - t0)
            ks = self._stages(drift, x, float(t0), h, drift.velocity(x, t0), len(self.nodes) - 1)
            return x + h * sum(b * k for b, k in zip(self.weights, ks) if b != 0)
        return self._adaptive(drift, x, t0, t1)

    # -- error control -------------------------------------------------------------------------------------
    def _initial_step(self, drift: Evaluator, x: Tensor, t0: float, span: float, k1: Tensor) -> float:
        """Hairer's starting step (Solving ODEs I, §II.4, "Starting step size"): a step whose Euler error,
        estimated from ``v`` and one more evaluation, is about the tolerance; one evaluation."""
        d0, d1 = self._norm(x, x, x), self._norm(k1, x, x)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, abs(span))
        probe = x + math.copysign(h0, span) * k1
        k2 = drift.velocity(probe, x.new_tensor(t0 + math.copysign(h0, span)))
        d2 = self._norm(k2 - k1, x, x) / h0
        largest = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if largest <= 1e-15 else (0.01 / largest) ** (1.0 / (self.order + 1))
        return math.copysign(min(100 * h0, h1, abs(span)), span)

    def _adaptive(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        memory, t_end, t = drift.memory, float(t1), float(t0)
        span = t_end - t
        k1 = self._first_stage(drift, x, t0)
        h = memory.get("h")
        h = self._initial_step(drift, x, t, span, k1) if h is None else math.copysign(abs(h), span)
        rejected_last = False
        while (t_end - t) * span > 0:
            floor = max(self.min_step, 4 * torch.finfo(x.dtype).eps * max(abs(t), abs(t_end)))
            if abs(h) < floor and abs(t_end - t) > floor:
                raise ConfigError(f"min_step: at t={t:.6g} the error control asks for a step of {abs(h):.3g}, "
                                  f"below min_step={self.min_step:.3g}; expected looser rtol/atol or a smaller "
                                  "min_step (the ODE may be stiff or singular there)")
            taken = memory.get("steps", 0) + 1
            if taken > self.max_steps:
                raise ConfigError(f"max_steps: {self.max_steps} steps reached at t={t:.6g} before t={t_end:.6g}; "
                                  f"expected a larger max_steps or looser rtol={self.rtol:g}/atol={self.atol:g}")
            memory["steps"] = taken
            landing = (t + 1.01 * h - t_end) * span >= 0  # close enough to t1: land on it exactly
            h_try = t_end - t if landing else h
            ks = self._stages(drift, x, t, h_try, k1, len(self.nodes) - 1)
            x_new = x + h_try * sum(b * k for b, k in zip(self.weights, ks) if b != 0)
            ks.append(drift.velocity(x_new, x.new_tensor(t + h_try)))  # the last stage (FSAL: its row is b)
            error = h_try * sum(w * k for w, k in zip(self.error_weights, ks) if w != 0)
            err = self._norm(error, x, x_new)
            finite = math.isfinite(err) and bool(torch.isfinite(x_new).all())
            factor = FAC_MIN if not finite else (FAC_MAX if err == 0 else SAFETY * err ** (-1.0 / self.order))
            if finite and err <= 1:
                t, x, k1 = (t_end if landing else t + h_try), x_new, ks[-1]
                h = h_try * min(1.0 if rejected_last else FAC_MAX, max(FAC_MIN, factor))
                rejected_last = False
            else:
                h = h_try * min(1.0, max(FAC_MIN, factor))
                rejected_last = True
        memory["h"], memory["fsal"] = h, (x, k1)
        return x


class Dopri5(EmbeddedRungeKutta):
    """Dormand-Prince 5(4) (Dormand & Prince 1980, J. Comput. Appl. Math. 6; the tableau of Hairer, Norsett &
    Wanner, *Solving ODEs I*, Table II.5.2): seven stages, FSAL, the 5th-order solution propagated."""

    order = 5
    nodes = (0.0, 0.2, 0.3, 0.8, 8 / 9, 1.0, 1.0)
    coupling = tuple(tuple(float(a) for a in row) for row in (
        (F(1, 5),),
        (F(3, 40), F(9, 40)),
        (F(44, 45), F(-56, 15), F(32, 9)),
        (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
        (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
        (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)),
    ))
    weights = coupling[-1] + (0.0,)
    embedded = tuple(float(b) for b in (F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200),
                                        F(187, 2100), F(1, 40)))


class Bosh3(EmbeddedRungeKutta):
    """Bogacki-Shampine 3(2) (Bogacki & Shampine 1989, Appl. Math. Lett. 2(4), eq. 3): four stages, FSAL, the
    3rd-order solution propagated; cheaper per step than ``dopri5`` for loose tolerances."""

    order = 3
    nodes = (0.0, 0.5, 0.75, 1.0)
    coupling = tuple(tuple(float(a) for a in row) for row in (
        (F(1, 2),),
        (0, F(3, 4)),
        (F(2, 9), F(1, 3), F(4, 9)),
    ))
    weights = coupling[-1] + (0.0,)
    embedded = tuple(float(b) for b in (F(7, 24), F(1, 4), F(1, 3), F(1, 8)))
