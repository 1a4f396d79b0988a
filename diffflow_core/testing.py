"""diffflow's testing kit for plugin authors: a fixture, closed-form problems and contract checks.

Installed with diffflow-core as a pytest plugin (entry point ``pytest11``), so any plugin's test suite gets the
``fresh_plugins`` fixture without a ``conftest.py``. The rest is plain functions a third party calls on its own
components (the kernel's suite runs them over every registered solver and flow):

* :func:`check_flow` - shapes, finiteness and determinism per seed of the prior, the time grid and the drift;
* :func:`check_solver` - the :class:`~diffflow_core.interfaces.Solution` a solve returns, its NFE against the
  solver's declared :meth:`~diffflow_core.interfaces.Solver.nfe`, determinism per seed, and the declared
  ``order`` *measured* on a closed-form problem (:func:`fitted_order`); a solver that requires more of a flow
  than the contract must refuse a plain flow before any evaluation; an adaptive solver (``Solver.adaptive``) must
  refuse an NFE budget, report the evaluations it really made and get more accurate at tighter tolerances.

Problems run in float64 so round-off stays far below the discretisation error.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterator, Sequence

import attrs
import pytest
import torch
from torch import Tensor, nn

from diffflow_core import plugins
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, SamplingContext, Solution, Solver

__all__ = ["fresh_plugins", "AnalyticNetwork", "Problem", "Decay", "decay_problem", "Rotation", "rotation_problem",
           "fitted_slope", "fitted_order", "check_flow", "check_solver"]


@pytest.fixture
def fresh_plugins() -> Iterator:
    """The ``diffflow_core.plugins`` module with a fresh plugin manager (entry points scanned again on first
    use) for one test; the previous manager comes back afterwards (:func:`diffflow_core.plugins.isolated`)."""
    with plugins.isolated():
        yield plugins


class AnalyticNetwork(nn.Module):
    """A network given by a formula ``fn(x, t)`` with ``t`` shaped ``[N, 1]``: a flow built on it has a closed-form
    drift (an exact denoiser, velocity or log-ratio), against which compositions and maps are tested."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(x, t.reshape(-1, 1))


class Decay(Flow):
    """``dx/dt = -x`` with exact solution ``x(t) = x(t0) e^{-(t - t0)}``."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -x


@attrs.frozen
class Problem:
    """A flow, an initial state, a grid maker ``steps -> times`` and the exact final state."""

    flow: Flow
    x0: Tensor
    grid: Callable[[int], Tensor]
    exact: Tensor


def decay_problem(t_end: float = 1.0) -> Problem:
    """``dx/dt = -x`` from ``x(0) = (1, -2, 0.5)`` to ``t_end`` on a uniform grid."""
    x0 = torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)

    def grid(steps: int) -> Tensor:
        return torch.linspace(0.0, t_end, steps + 1, dtype=torch.float64)

    return Problem(Decay(), x0, grid, x0 * torch.exp(torch.tensor(-t_end, dtype=torch.float64)))


class Rotation(Flow):
    """``dx/dt = A x`` with ``A = [[0, -1], [1, 0]]``: ``x(t)`` turns at unit speed and keeps its length, so a
    long solve accumulates error instead of damping it (unlike :class:`Decay`)."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.stack([-x[:, 1], x[:, 0]], dim=1)


def rotation_problem(t_end: float = 20.0) -> Problem:
    """:class:`Rotation` from two points to ``t_end`` (about three turns by default) on a uniform grid."""
    x0 = torch.tensor([[1.0, 0.0], [0.3, -2.0]], dtype=torch.float64)
    c, s = math.cos(t_end), math.sin(t_end)
    exact = torch.stack([x0[:, 0] * c - x0[:, 1] * s, x0[:, 0] * s + x0[:, 1] * c], dim=1)
    return Problem(Rotation(), x0, lambda n: torch.linspace(0.0, t_end, n + 1, dtype=torch.float64), exact)


def fitted_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log(ys)`` against ``log(xs)``."""
    lx = torch.log(torch.as_tensor(xs, dtype=torch.float64))
    ly = torch.log(torch.as_tensor(ys, dtype=torch.float64))
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


def fitted_order(solver: Solver, problem: Problem, steps: Sequence[int] = (8, 16, 32, 64)) -> float:
    """Minus the fitted log-log slope of the endpoint error against the step count: ~ the solver's order."""
    errors = [float((solver.solve(problem.flow, problem.x0, problem.grid(n)).x - problem.exact).abs().max())
              for n in steps]
    return -fitted_slope(steps, errors)


def _seeded(seed: int) -> SamplingContext:
    return SamplingContext(torch.Generator().manual_seed(seed))


def check_flow(flow: Flow, n: int = 16, steps: int = 4, seed: int = 0) -> None:
    """Assert the Flow contract on ``flow``: ``time_grid(steps)`` has ``steps + 1`` finite, strictly monotone
    times; ``prior`` gives ``[n, *event_shape]`` finite particles, the same for the same seed; the drift at the
    first and a middle time has the particles' shape, is finite and is the same for the same seed (every random
    draw comes from the context's generator); ``diffusion`` is finite and non-negative there."""
    name = type(flow).__name__
    times = flow.time_grid(steps)
    assert times.shape == (steps + 1,), f"{name}.time_grid({steps}): shape {tuple(times.shape)}"
    diffs = times[1:] - times[:-1]
    assert bool(torch.isfinite(times).all()), f"{name}.time_grid: non-finite times {times}"
    assert bool((diffs > 0).all()) or bool((diffs < 0).all()), f"{name}.time_grid: not strictly monotone {times}"
    x = flow.prior(n, generator=torch.Generator().manual_seed(seed))
    assert x.shape == (n, *flow.event_shape), f"{name}.prior({n}): shape {tuple(x.shape)}, event {flow.event_shape}"
    assert bool(torch.isfinite(x).all()), f"{name}.prior: non-finite particles"
    assert torch.equal(x, flow.prior(n, generator=torch.Generator().manual_seed(seed))), \
        f"{name}.prior: two draws with seed {seed} differ"
    assert isinstance(flow.is_stochastic, bool), f"{name}.is_stochastic is not a bool"
    for step in (0, steps // 2):
        t = times[step].to(x.dtype)
        drifts = [flow.evaluate_drift(x, t, attrs.evolve(_seeded(seed), step=step, steps=steps)) for _ in range(2)]
        assert drifts[0].shape == x.shape, f"{name}.drift at t={float(t):.4g}: shape {tuple(drifts[0].shape)}"
        assert bool(torch.isfinite(drifts[0]).all()), f"{name}.drift at t={float(t):.4g}: non-finite values"
        assert torch.equal(drifts[0], drifts[1]), f"{name}.drift at t={float(t):.4g}: differs for the same seed"
        g = torch.as_tensor(flow.diffusion(t))
        assert bool(torch.isfinite(g).all()) and bool((g >= 0).all()), f"{name}.diffusion({float(t):.4g}) = {g}"


class _Untouchable(Flow):
    """A plain flow whose every evaluation fails: a refusal must come before any work."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        raise AssertionError("drift evaluated before the solver refused the flow")


def check_solver(solver: Solver, problem: Problem | None = None, steps: Sequence[int] = (16, 32, 64, 128),
                 tolerance: float = 0.3, seed: int = 0) -> None:
    """Assert the Solver contract on ``solver`` over ``problem`` (default :func:`decay_problem`).

    A solve returns a :class:`Solution` whose ``x`` has the initial state's shape and is finite, whose ``nfe``
    is the solver's declared ``nfe(steps, flow)``, and which is the same for the same seed; the order fitted over
    ``steps`` is the declared ``order`` within ``tolerance``. Given no problem, a solver that refuses the plain
    :class:`Decay` flow (``check``: it ``requires`` more of a flow) must refuse it in ``solve`` with a ConfigError
    before any evaluation; give such a solver a problem built on a flow of its family. An adaptive solver
    (``solver.adaptive``) is checked by :func:`_check_adaptive` instead of the declared NFE and order.
    """
    name = type(solver).__name__
    if problem is None:
        try:
            solver.check(Decay())
        except ConfigError:  # a family sampler (it requires more of a flow): it refuses before any evaluation
            with pytest.raises(ConfigError):
                solver.solve(_Untouchable(), torch.zeros(2, 1), torch.linspace(0, 1, 3))
            return
        problem = decay_problem()
    times = problem.grid(steps[0])
    runs = [solver.solve(problem.flow, problem.x0, times, generator=torch.Generator().manual_seed(seed))
            for _ in range(2)]
    solution = runs[0]
    assert isinstance(solution, Solution), f"{name}.solve returned a {type(solution).__name__}, not a Solution"
    assert solution.x.shape == problem.x0.shape, f"{name}: final particles of shape {tuple(solution.x.shape)}"
    assert bool(torch.isfinite(solution.x).all()), f"{name}: non-finite final particles"
    assert torch.equal(runs[0].x, runs[1].x), f"{name}: two solves with seed {seed} differ"
    if solver.adaptive:
        _check_adaptive(solver, problem)
        return
    declared = solver.nfe(len(times) - 1, problem.flow)
    assert solution.nfe == declared, f"{name}: {solution.nfe} evaluations, declared nfe({len(times) - 1}) = {declared}"
    measured = fitted_order(solver, problem, steps)
    assert abs(measured - solver.order) <= tolerance, f"{name}: measured order {measured:.3f}, declared {solver.order}"


class _Counting(Flow):
    """``flow``'s drift, counting the evaluations a solve really makes."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.inner, self.calls, self.singular_end = flow, 0, flow.singular_end

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        self.calls += 1
        return self.inner.evaluate_drift(x, t, context)


def _check_adaptive(solver: Solver, problem: Problem) -> None:
    """The contract of an adaptive solver (``rtol``/``atol`` attributes): ``nfe``/``steps_for`` refuse with a
    ConfigError, the reported NFE is the evaluations really made, and tolerances 100 times tighter give a smaller
    endpoint error for more evaluations."""
    name = type(solver).__name__
    for ask in (solver.nfe, solver.steps_for):
        with pytest.raises(ConfigError):
            ask(8, problem.flow)
    tight = copy.copy(solver)
    tight.rtol, tight.atol = solver.rtol / 100, solver.atol / 100
    errors, nfes = [], []
    for each in (solver, tight):
        counting = _Counting(problem.flow)
        solution = each.solve(counting, problem.x0, problem.grid(1))
        assert solution.nfe == counting.calls, f"{name}: reported {solution.nfe} evaluations, made {counting.calls}"
        errors.append(float((solution.x - problem.exact).abs().max()))
        nfes.append(solution.nfe)
    assert errors[1] < errors[0] and nfes[1] > nfes[0], \
        f"{name}: rtol/atol 100x tighter gave errors {errors} for NFE {nfes}; expected a smaller error for more work"
