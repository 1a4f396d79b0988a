"""Linear multistep (``lms``): its Adams-Bashforth weights are exact on polynomials of degree order - 1 on any
grid, and its global order, measured, is 2 (the Euler first step); the noise-level and time grids: endpoints,
monotonicity and the spacing each is defined by."""
from __future__ import annotations

import math

import pytest
import torch

from diffflow_core import ConfigError, build, registry
from diffflow_core.testing import decay_problem, fitted_order
from diffflow_solvers.multistep import adams_bashforth_coefficients
from diffflow_solvers.testing import edm_gaussian_problem


@pytest.mark.parametrize("order", [2, 3, 4])
def test_adams_bashforth_weights_integrate_polynomials_of_degree_order_minus_one_exactly(order):
    """After ``order - 1`` start-up steps the step is exact for a drift of degree ``order - 1`` in t, on an
    uneven decreasing grid; one degree more is not (the weights have exactly that order)."""
    times = torch.tensor([1.0, 0.8, 0.75, 0.5, 0.45, 0.2, 0.1], dtype=torch.float64)
    nodes, t_next = times[:order].flip(0).tolist(), float(times[order])
    for degree, exact in ((order - 1, True), (order, False)):
        weights = adams_bashforth_coefficients(nodes, t_next)
        p = lambda t: sum((k + 1) * t ** k for k in range(degree + 1))  # noqa: E731
        step = sum(w * p(t) for w, t in zip(weights, nodes))
        integral = sum(t_next ** (k + 1) - nodes[0] ** (k + 1) for k in range(degree + 1))
        assert (abs(step - integral) < 1e-12) is exact


@pytest.mark.parametrize("order", [2, 3, 4])
def test_lms_has_global_order_two_and_one_evaluation_per_step(order):
    solver = registry("solvers").create("lms", order=order)
    assert abs(fitted_order(solver, decay_problem(), (16, 32, 64, 128)) - solver.order) <= 0.25
    problem = decay_problem()
    assert solver.solve(problem.flow, problem.x0, problem.grid(9)).nfe == 9 == solver.nfe(9, problem.flow)
    assert solver.steps_for(10, problem.flow) == 10


def test_lms_higher_orders_lower_the_error_on_the_edm_gaussian_pf_ode():
    """On EDM's rho-grid the Euler start-up is taken at large sigma, where the PF-ODE is nearly linear, so the
    steady Adams-Bashforth order shows: each order is more accurate than the one below."""
    problem = edm_gaussian_problem()
    for steps in (20, 40):
        errors = [float((registry("solvers").create("lms", order=o).solve(problem.flow, problem.x0,
                                                                          problem.grid(steps)).x
                         - problem.exact).abs().max()) for o in (2, 3, 4)]
        assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("order", [1, 5, 2.0, True])
def test_lms_refuses_an_order_outside_two_to_four(order):
    with pytest.raises(ConfigError, match="^order: expected"):
        registry("solvers").create("lms", order=order)


SIGMA_GRIDS = ["edm", "exponential", "log-snr", "polyexponential", "vp"]


@pytest.mark.parametrize("name", SIGMA_GRIDS)
@pytest.mark.parametrize("append_zero", [True, False])
def test_noise_level_grids_decrease_from_sigma_max_to_sigma_min(name, append_zero):
    grid = registry("grids").get(name)
    assert grid.space == "sigma"
    levels = grid(7, sigma_min=0.02, sigma_max=20.0, append_zero=append_zero, dtype=torch.float64)
    assert levels.shape == (8,) and bool((levels[1:] < levels[:-1]).all())
    assert levels[0] == 20.0 and (levels[-2] == 0.02 and levels[-1] == 0 if append_zero else levels[-1] == 0.02)


def test_exponential_grid_is_uniform_in_log_sigma_and_is_polyexponential_at_rho_one():
    grids = registry("grids")
    levels = grids.get("exponential")(6, sigma_min=0.02, sigma_max=20.0, append_zero=False, dtype=torch.float64)
    gaps = torch.diff(torch.log(levels))
    assert torch.allclose(gaps, torch.full_like(gaps, math.log(0.02 / 20.0) / 6), rtol=1e-12)
    assert torch.equal(levels, grids.get("polyexponential")(6, 0.02, 20.0, rho=1.0, append_zero=False,
                                                            dtype=torch.float64))
    assert grids.get("log-snr") is grids.get("exponential")
    steeper = grids.get("polyexponential")(6, 0.02, 20.0, rho=2.0, append_zero=False, dtype=torch.float64)
    assert bool((steeper[1:-1] < levels[1:-1]).all())  # rho > 1 spends more steps at small sigma


def test_vp_grid_is_uniform_in_the_vp_time():
    beta_min, beta_d = 0.1, 19.9
    levels = registry("grids").get("vp")(5, sigma_min=0.02, sigma_max=20.0, append_zero=False, dtype=torch.float64)
    t = (torch.sqrt(beta_min ** 2 + 2 * beta_d * torch.log1p(levels ** 2)) - beta_min) / beta_d
    assert torch.allclose(torch.diff(t), torch.diff(t)[:1].expand(5), rtol=1e-9)


def test_power_grid_refines_towards_the_end_and_is_uniform_at_exponent_one():
    grid = registry("grids").get("power")
    assert grid.space == "time"
    up = grid(4, start=0.0, end=1.0, exponent=2.0, dtype=torch.float64)
    assert up.tolist() == [0.0, 0.4375, 0.75, 0.9375, 1.0]
    assert torch.allclose(grid(4, 1.0, 0.0, exponent=1.0), registry("grids").get("uniform")(4, 1.0, 0.0))


def test_grids_are_selectable_per_sample_call_and_mapped_to_the_flows_time():
    """EDM samples in sigma, so an exponential grid is the levels themselves; a velocity flow takes time grids
    and refuses a noise-level grid in one line; the default grid is unchanged."""
    edm = build({"flow": {"name": "score", "parameterisation": "edm", "sigma_min": 0.02, "sigma_max": 20.0,
                          "network": {"name": "mlp", "hidden": 8, "depth": 1}}}, data="ring5")
    expected = registry("grids").get("exponential")(4, sigma_min=0.02, sigma_max=20.0, dtype=torch.float64)
    assert torch.equal(edm.times(4, "exponential"), expected)
    assert torch.equal(edm.times(4), edm.flow.time_grid(4))
    assert edm.sample(3, 4, grid="exponential", solver="euler").nfe == 4
    velocity = build({"flow": {"name": "velocity", "network": {"name": "mlp", "hidden": 8, "depth": 1}}},
                     data="ring5")
    assert velocity.times(4, {"name": "power", "exponent": 2.0}).tolist() == [0.0, 0.4375, 0.75, 0.9375, 1.0]
    with pytest.raises(ConfigError, match="^grid: 'exponential' places noise levels"):
        velocity.sample(3, 4, grid="exponential")
    with pytest.raises(ConfigError, match="^grid 'power': unknown parameter 'rho'"):
        velocity.times(4, {"name": "power", "rho": 2})
