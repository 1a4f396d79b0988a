"""DDIM, DPM-Solver-2, DPM-Solver++(2M) and UniPC on the score flow: orders measured against the closed-form
PF-ODE of Gaussian data under the EDM and the VP schedule, evaluation counts, DDIM = Euler in EDM's sigma, and
refusal of a flow without a data prediction before any work."""
from __future__ import annotations

import pytest
import torch

from diffflow_core import ConfigError, registry
from diffflow_core.testing import Decay, Problem, fitted_order
from diffflow_score.testing import exact_flow, gaussian_denoiser

S = 0.5


def gaussian_problem(parameterisation: str) -> Problem:
    """Data N(0, S^2): ``y = x / alpha`` follows ``y(sigma) = y(sigma_0) sqrt((S^2 + sigma^2) / (S^2 + sigma_0^2))``
    (SPEC §2.11.1), so ``x`` at the end of any grid is known exactly. EDM runs on its rho-grid down to
    sigma_min (no singular end), VP in t on the exponential grid (equal steps in log-SNR) mapped to its time."""
    flow = exact_flow(gaussian_denoiser(S), parameterisation).double()
    schedule = flow.schedule
    x0 = torch.tensor([[2.0], [-1.0], [0.5]], dtype=torch.float64) * schedule.prior_std

    def grid(steps: int) -> torch.Tensor:
        if parameterisation == "edm":
            return registry("grids").get("edm")(steps, sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max,
                                                append_zero=False, dtype=torch.float64)
        return flow.time_grid(steps, grid="exponential")

    ends = grid(1)
    sigma0, sigma1 = schedule.sigma(ends[0]), schedule.sigma(ends[1])
    exact = schedule.alpha(ends[1]) * x0 / schedule.alpha(ends[0]) * torch.sqrt((S ** 2 + sigma1 ** 2)
                                                                                 / (S ** 2 + sigma0 ** 2))
    return Problem(flow, x0, grid, exact)


SOLVERS = [("ddim", {}, 1), ("dpm-2", {}, 2), ("dpmpp-2m", {}, 2), ("unipc", {"order": 1}, 2), ("unipc", {}, 3)]


@pytest.mark.parametrize("parameterisation", ["edm", "vp"])
@pytest.mark.parametrize("name,params,order", SOLVERS)
def test_measured_order_is_the_stated_order(parameterisation, name, params, order):
    solver = registry("solvers").create(name, **params)
    assert solver.order == order
    measured = fitted_order(solver, gaussian_problem(parameterisation), (16, 32, 64, 128))
    assert abs(measured - order) <= 0.25, f"{name} {params} on {parameterisation}: measured order {measured:.3f}"


def test_ddim_is_the_euler_step_in_edm_sigma():
    problem = gaussian_problem("edm")
    times = problem.grid(7)
    ddim = registry("solvers").create("ddim").solve(problem.flow, problem.x0, times).x
    euler = registry("solvers").create("euler").solve(problem.flow, problem.x0, times).x
    assert torch.allclose(ddim, euler, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,nfe", [("ddim", 6), ("dpm-2", 11), ("dpmpp-2m", 6), ("unipc", 6)])
def test_evaluations_into_sigma_zero_are_as_declared(name, nfe):
    """EDM's default grid ends at sigma = 0: DPM-Solver-2 skips its midpoint there (2N - 1); every solver ends
    with the data prediction."""
    flow = exact_flow(gaussian_denoiser(S), "edm").double()
    solver = registry("solvers").create(name)
    solution = solver.solve(flow, flow.prior(64, torch.Generator().manual_seed(0)).double(), flow.time_grid(6))
    assert solution.nfe == nfe == solver.nfe(6, flow) and solver.steps_for(nfe, flow) == 6
    assert bool(torch.isfinite(solution.x).all())


@pytest.mark.parametrize("name", ["ddim", "dpm-2", "dpmpp-2m", "unipc"])
def test_a_flow_without_a_data_prediction_or_an_sde_is_refused_before_work(name):
    solver = registry("solvers").create(name)
    with pytest.raises(ConfigError, match="needs a flow with denoise, schedule; flow Decay has no denoise, schedule"):
        solver.solve(Decay(), torch.ones(2, 1), torch.linspace(0, 1, 3))
    with pytest.raises(ConfigError, match="integrates ODEs only"):
        solver.check(exact_flow(gaussian_denoiser(S), "edm", mode="sde"))


@pytest.mark.parametrize("order", [0, 4, 1.5])
def test_unipc_refuses_an_order_outside_one_to_three(order):
    with pytest.raises(ConfigError, match="^order: expected"):
        registry("solvers").create("unipc", order=order)


@pytest.mark.parametrize("name", ["ddim", "dpm-2", "dpmpp-2m", "unipc", "euler-ancestral", "dpmpp-3m-sde"])
def test_a_flow_with_another_kind_of_schedule_is_refused_before_work(name):
    """An NDM flow has ``denoise`` and a ``schedule``, but not the score flow's alpha/sigma/time_of."""
    from diffflow_core import build, registry
    from diffflow_core.errors import ConfigError

    model = build(preset="ndm")
    with pytest.raises(ConfigError, match=r"needs a noise schedule with alpha, sigma, time_of"):
        registry("solvers").create(name).check(model.flow)
