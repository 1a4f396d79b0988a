"""The adaptive embedded Runge-Kutta solvers (``dopri5``, ``bosh3``) on closed-form problems.

Fixed-step mode measures each tableau's order by step refinement; adaptive mode is measured by its tolerance: the
endpoint error falls in proportion to rtol (local extrapolation: the propagated solution is one order above the
controlled estimate) and the NFE grows as rtol^(-1/p), since the controlled local error estimate is O(h^p). The
reported NFE is the evaluations the flow really saw, rejected steps and the starting-step probe included.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from diffflow_core import ConfigError, Flow, SamplingContext, build, registry
from diffflow_core.commands.run import steps_for_nfe
from diffflow_core.testing import Problem, Rotation, check_solver, decay_problem, fitted_order, fitted_slope, rotation_problem
from diffflow_solvers.adaptive import Bosh3, Dopri5
from diffflow_solvers.testing import edm_gaussian_problem

F64 = torch.float64
ORDERS = {"dopri5": 5, "bosh3": 3}


class Counting(Flow):
    """A flow's drift, counting evaluations and the times they were made at."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.inner, self.times, self.singular_end = flow, [], flow.singular_end

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        self.times.append(float(t))
        return self.inner.evaluate_drift(x, t, context)


class Blowup(Flow):
    """``dx/dt = x^2`` from ``x(0) = 1``: ``x = 1 / (1 - t)`` is singular at t = 1."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return x * x


def error(solution_x: Tensor, problem: Problem) -> float:
    return float((solution_x - problem.exact).abs().max())


@pytest.mark.parametrize("name", sorted(ORDERS))
@pytest.mark.parametrize("problem,steps", [(decay_problem, (4, 8, 16, 32)), (rotation_problem, (40, 80, 160, 320))],
                         ids=["decay", "rotation"])
def test_fixed_step_mode_has_the_order_of_its_tableau(name, problem, steps):
    solver = registry("solvers").create(name, adaptive=False)
    measured = fitted_order(solver, problem(), steps)
    assert abs(measured - ORDERS[name]) < 0.25, f"{name}: fitted order {measured:.3f}"


def test_bosh3_fixed_step_order_on_the_edm_gaussian_pf_ode():
    measured = fitted_order(Bosh3(adaptive=False), edm_gaussian_problem(), (16, 32, 64, 128))
    assert abs(measured - 3) < 0.25, measured


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_error_follows_the_tolerance_and_nfe_grows_as_its_inverse_root(name):
    problem, tolerances = rotation_problem(), (1e-4, 1e-5, 1e-6, 1e-7)
    errors, nfes = [], []
    for tol in tolerances:
        solution = registry("solvers").create(name, rtol=tol, atol=tol).solve(problem.flow, problem.x0,
                                                                            problem.grid(1))
        errors.append(error(solution.x, problem))
        nfes.append(solution.nfe)
    assert abs(fitted_slope(tolerances, errors) - 1) < 0.15, errors
    assert abs(-fitted_slope(tolerances, nfes) - 1 / ORDERS[name]) < 0.04, nfes


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_error_at_rtol_1e_6_is_below_1e_5_on_a_linear_ode(name):
    """On the decay over [0, 1]; the tolerance is local, so over the rotation's three turns the global error
    of bosh3 at rtol 1e-6 is larger (it grows with the number of steps)."""
    problem = decay_problem()
    solution = registry("solvers").create(name, rtol=1e-6, atol=1e-6).solve(problem.flow, problem.x0,
                                                                            problem.grid(1))
    assert error(solution.x, problem) < 1e-5


@pytest.mark.parametrize("solver", [Dopri5(), Bosh3(), Dopri5(adaptive=False), Bosh3(adaptive=False)],
                         ids=["dopri5", "bosh3", "dopri5-fixed", "bosh3-fixed"])
def test_the_kit_contract_in_both_modes(solver):
    check_solver(solver)


def test_nfe_is_every_evaluation_and_the_solve_passes_through_each_grid_point():
    """The count is the flow's own (the starting-step probe and any rejected step included), and every grid
    point is a step's end: callbacks and the recorded trajectory come there."""
    problem, steps, seen = rotation_problem(6.0), 5, []
    counting = Counting(problem.flow)
    times = problem.grid(steps)
    solution = Dopri5(rtol=1e-8, atol=1e-8).solve(counting, problem.x0, times, record=True,
                                                   callback=lambda info: seen.append((float(info.t), info.nfe)))
    assert solution.nfe == len(counting.times) > 6 * steps
    assert [t for t, _ in seen] == pytest.approx(times[1:].tolist(), abs=0) and seen[-1][1] == solution.nfe
    for k, t in enumerate(times.tolist()):  # the recorded trajectory is the solution at the grid points
        c, s = math.cos(t), math.sin(t)
        x0 = problem.x0
        exact = torch.stack([x0[:, 0] * c - x0[:, 1] * s, x0[:, 0] * s + x0[:, 1] * c], dim=1)
        assert (solution.trajectory[k] - exact).abs().max() < 1e-6
    assert set(times.tolist()) <= set(counting.times)  # each grid point is reached by a step


def test_a_singular_end_is_never_evaluated_and_the_last_interval_is_one_euler_step():
    from diffflow_solvers.testing import EDMGaussian

    flow = EDMGaussian(0.5)
    flow.singular_end = True
    counting = Counting(flow)
    x0 = torch.tensor([[80.0], [-40.0]], dtype=F64)
    times = torch.tensor([80.0, 0.002, 0.0], dtype=F64)
    solution = Dopri5(rtol=1e-7, atol=1e-7).solve(counting, x0, times)
    assert min(counting.times) > 0 and solution.nfe == len(counting.times)
    assert torch.allclose(solution.x, flow.exact(x0, 80.0, 0.0), rtol=1e-5)


def test_min_step_and_max_steps_are_named_when_reached():
    x0, times = torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    with pytest.raises(ConfigError, match=r"min_step: at t=0\.99\d* the error control asks for a step of"):
        Dopri5(min_step=1e-6).solve(Blowup(), x0, times)
    with pytest.raises(ConfigError, match="min_step"):  # min_step 0: floating-point resolution is the floor
        Bosh3().solve(Blowup(), x0, times)
    problem = rotation_problem()
    with pytest.raises(ConfigError, match=r"max_steps: 10 steps reached at t="):
        Dopri5(max_steps=10).solve(problem.flow, problem.x0, problem.grid(1))


def test_an_nfe_budget_is_refused_naming_the_tolerances_before_work():
    solver = Dopri5()
    for ask in (solver.nfe, solver.steps_for):
        with pytest.raises(ConfigError, match=r"nfe: solver Dopri5 is adaptive.*rtol/atol"):
            ask(10, Rotation())
    model = build(preset="flow-matching", solver={"name": "dopri5", "rtol": 1e-4})
    assert model.solver.rtol == 1e-4
    with pytest.raises(ConfigError, match="rtol/atol"):
        steps_for_nfe(model, 20)
    fixed = Dopri5(adaptive=False)
    assert fixed.steps_for(fixed.nfe(7, Rotation()), Rotation()) == 7


@pytest.mark.parametrize("kwargs,message", [
    ({"rtol": 0.0}, "rtol: expected a finite number in"), ({"atol": -1.0}, "atol: expected a positive number"),
    ({"min_step": -1.0}, "min_step: expected a number >= 0"), ({"max_steps": 0}, "max_steps: expected a positive"),
    ({"adaptive": "yes"}, "adaptive: expected true or false"),
])
def test_bad_parameters_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Dopri5(**kwargs)
