"""Convergence orders measured as fitted log-log slopes of endpoint error against the step count."""
from __future__ import annotations

import pytest
import torch

from diffflow_core import Flow, registry
from diffflow_solvers.grids import uniform
from diffflow_solvers.testing import decay_problem, edm_gaussian_problem, fitted_order, fitted_slope

STEPS = (16, 32, 64, 128)


@pytest.mark.parametrize("problem", [decay_problem, edm_gaussian_problem], ids=["decay", "edm-gaussian"])
@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2)])
def test_fitted_order(problem, name, order):
    measured = fitted_order(registry("solvers").create(name), problem(), STEPS)
    tolerance = 0.2 if order == 1 else 0.25
    assert abs(measured - order) < tolerance, f"{name}: fitted order {measured:.3f}, expected {order}"


def test_solution_of_the_edm_problem_is_exact_in_the_limit():
    """The closed form really solves the ODE: a fine Heun solve agrees to 1e-4 relative."""
    problem = edm_gaussian_problem()
    x = registry("solvers").create("heun").solve(problem.flow, problem.x0, problem.grid(1000)).x
    assert torch.allclose(x, problem.exact, rtol=1e-4, atol=0)


class OU(Flow):
    """dx = -x dt + dW: from x0, E[x_t] = x0 e^{-t}, Var[x_t] = (1 - e^{-2t}) / 2."""

    def drift(self, x, t):
        return -x

    def diffusion(self, t):
        return 1.0


def test_euler_maruyama_weak_error_is_first_order():
    """Weak errors of the OU mean and variance at t = 1 shrink as O(h): fitted slope 1 +/- 0.2 (MC noise ~1e-3)."""
    n, x_start, steps = 400_000, 2.0, (4, 8, 16, 32)
    mean_err, var_err = [], []
    exact_mean = x_start * torch.exp(torch.tensor(-1.0, dtype=torch.float64))
    exact_var = (1 - torch.exp(torch.tensor(-2.0, dtype=torch.float64))) / 2
    for k in steps:
        x0 = torch.full((n, 1), x_start, dtype=torch.float64)
        x = registry("solvers").create("euler-maruyama").solve(
            OU(), x0, uniform(k, dtype=torch.float64), generator=torch.Generator().manual_seed(0)).x
        mean_err.append(float((x.mean() - exact_mean).abs()))
        var_err.append(float((x.var() - exact_var).abs()))
    assert abs(-fitted_slope(steps, mean_err) - 1) < 0.2, mean_err
    assert abs(-fitted_slope(steps, var_err) - 1) < 0.2, var_err


def test_euler_maruyama_without_diffusion_is_euler():
    problem = decay_problem()
    grid = problem.grid(10)
    em = registry("solvers").create("euler-maruyama").solve(problem.flow, problem.x0, grid).x
    assert torch.equal(em, registry("solvers").create("euler").solve(problem.flow, problem.x0, grid).x)


def test_fitted_slope_recovers_an_exact_power_law():
    xs = (3.0, 10.0, 40.0, 200.0)
    assert fitted_slope(xs, [7.0 * x ** -1.5 for x in xs]) == pytest.approx(-1.5, abs=1e-12)
