"""The stochastic data-prediction samplers (Euler/Heun ancestral, DPM-Solver++ 2M/3M SDE) against closed forms.

Data ``N(0, s^2)`` with its exact denoiser: sampled from the prior, the final particles must have the data's mean
and variance within sampling error (the samplers of order 2 at 100 steps), Euler ancestral's variance error must
halve when the steps double (first order), and at ``eta = 0`` each is its deterministic counterpart, whose order
is measured on the EDM Gaussian PF-ODE.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffflow_core import ConfigError, registry
from diffflow_core.testing import Problem, fitted_order, fitted_slope
from diffflow_score.testing import exact_flow, gaussian_denoiser
from diffflow_solvers.grids import exponential

F64 = torch.float64
S = 0.5
STOCHASTIC = ("euler-ancestral", "heun-ancestral", "dpmpp-2m-sde", "dpmpp-3m-sde")


def gaussian_flow(parameterisation: str = "edm"):
    return exact_flow(gaussian_denoiser(S), parameterisation, event_shape=(1,)).double()


def sample(name: str, flow, times, n: int, seed: int = 0, **params) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x0 = flow.prior(n, generator=generator).double()
    return registry("solvers").create(name, **params).solve(flow, x0, times, generator=generator).x


@pytest.mark.parametrize("name", ["heun-ancestral", "dpmpp-2m-sde", "dpmpp-3m-sde"])
def test_final_marginal_is_the_gaussian_data_law_within_sampling_error(name):
    n = 200_000
    x = sample(name, gaussian_flow(), gaussian_flow().time_grid(100), n)
    assert abs(float(x.mean())) < 4 * S / math.sqrt(n)
    assert abs(float(x.var()) / S ** 2 - 1) < 4 * math.sqrt(2 / n)


def test_euler_ancestral_variance_error_is_first_order_in_the_steps():
    flow, steps, gaps = gaussian_flow(), (100, 200, 400), []
    for k in steps:
        x = sample("euler-ancestral", flow, flow.time_grid(k), 100_000)
        gaps.append(abs(float(x.var()) / S ** 2 - 1))
        assert abs(float(x.mean())) < 4 * S / math.sqrt(100_000)
    assert abs(-fitted_slope(steps, gaps) - 1) < 0.2, gaps


def test_a_vp_flow_is_sampled_in_its_own_time_through_the_schedule():
    """VP time t is mapped to the VE frame (x / alpha, sigma(t)); on a grid uniform in log sigma the final law is
    ``alpha^2 (s^2 + sigma_min^2)`` at t = eps."""
    flow = gaussian_flow("vp")
    schedule, n = flow.schedule, 100_000
    ends = schedule.sigma(torch.tensor([1.0, schedule.eps], dtype=F64))
    times = schedule.time_of(torch.exp(torch.linspace(float(ends[0].log()), float(ends[1].log()), 101, dtype=F64)))
    x = sample("dpmpp-2m-sde", flow, times, n)
    alpha = float(schedule.alpha(torch.tensor(schedule.eps, dtype=F64)))
    assert abs(float(x.var()) / (alpha ** 2 * (S ** 2 + float(ends[1]) ** 2)) - 1) < 4 * math.sqrt(2 / n)


def edm_problem() -> Problem:
    """EDM's Gaussian PF-ODE from sigma_max to sigma_min (exact solution, SPEC §2.11.1) on the grid uniform in
    log sigma, where the multistep methods' step ratios are 1 and their asymptotic order shows early."""
    flow = gaussian_flow()
    x0 = torch.tensor([[80.0], [-40.0], [10.0]], dtype=F64)
    exact = x0 * math.sqrt((S ** 2 + 0.002 ** 2) / (S ** 2 + 80.0 ** 2))
    return Problem(flow, x0, lambda k: exponential(k, append_zero=False, dtype=F64), exact)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_without_noise_each_has_the_order_it_declares(name):
    solver = registry("solvers").create(name, eta=0.0)
    measured = fitted_order(solver, edm_problem(), (32, 64, 128, 256))
    assert abs(measured - solver.order) < 0.25, f"{name}: fitted order {measured:.3f}, declared {solver.order}"


def test_without_noise_2m_sde_is_dpmpp_2m_and_3m_sde_is_more_accurate():
    problem = edm_problem()
    times = problem.grid(64)
    two = registry("solvers").create("dpmpp-2m-sde", eta=0.0).solve(problem.flow, problem.x0, times).x
    assert torch.allclose(two, registry("solvers").create("dpmpp-2m").solve(problem.flow, problem.x0, times).x,
                          rtol=1e-12, atol=1e-14)
    three = registry("solvers").create("dpmpp-3m-sde", eta=0.0).solve(problem.flow, problem.x0, times).x
    assert (three - problem.exact).abs().max() < (two - problem.exact).abs().max()


@pytest.mark.parametrize("name", STOCHASTIC)
def test_the_same_seed_gives_the_same_samples_and_nfe_is_as_declared(name):
    flow = gaussian_flow()
    times = flow.time_grid(8)
    first, again, other = (sample(name, flow, times, 64, seed) for seed in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    solver = registry("solvers").create(name)
    solution = solver.solve(flow, flow.prior(4, torch.Generator().manual_seed(0)).double(), times,
                            generator=torch.Generator().manual_seed(0))
    assert solution.nfe == solver.nfe(8, flow)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_an_sde_mode_flow_is_accepted_and_eta_is_checked(name):
    flow = exact_flow(gaussian_denoiser(S), "edm", event_shape=(1,), mode="sde").double()
    assert flow.is_stochastic
    x = sample(name, flow, flow.time_grid(4), 8)
    assert torch.isfinite(x).all()
    with pytest.raises(ConfigError, match="eta: expected a number >= 0"):
        registry("solvers").create(name, eta=-0.5)
