"""Gaussian -> Gaussian with the analytic optimal field (SPEC §4.5.1, §4.5.3) and its ODE likelihood."""
import math

import numpy as np
import pytest
import torch

from diffflow_core import registry
from diffflow_core.data import Dataset
from diffflow_core.interfaces import Batch
from diffflow_core.likelihood import log_prob
from diffflow_velocity.flow import VelocityFlow
from diffflow_velocity.objectives import FlowMatching

MEAN = torch.tensor([[1.5, -0.5]], dtype=torch.float64)


def moment_error(flow, affine, cov, solver, steps):
    """Error of the pushforward of N(0, I) by the solved ODE: ||M M^T - S||_F + ||b - m||."""
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    m, b = affine(lambda x: registry("solvers").create(solver).solve(flow, x, times).x, 2)
    return float(torch.linalg.norm(m @ m.T - cov) + torch.linalg.norm(b - MEAN[0]))


def test_optimal_field_maps_moments_exactly_in_the_limit(gaussian_flow, affine, spd):
    cov = spd(2, 0)
    flow = gaussian_flow(MEAN, cov[None])
    assert moment_error(flow, affine, cov, "heun", 2000) < 1e-6


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_solver_order_from_fitted_slope(gaussian_flow, affine, spd, solver, order):
    cov = spd(2, 0)
    flow = gaussian_flow(MEAN, cov[None])
    steps = np.array([8, 16, 32, 64, 128])
    errors = [moment_error(flow, affine, cov, solver, int(n)) for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope + order) < 0.15, (slope, errors)


def _regress(path):
    """Least-squares fit ``target ~ A x + c`` over the path samples: the loss minimiser among affine fields."""
    design = torch.cat([path.xt, torch.ones(path.xt.shape[0], 1, dtype=path.xt.dtype)], 1)
    coef = torch.linalg.lstsq(design, path.target).solution
    return coef[:-1].T, coef[-1]


def test_flow_matching_minimiser_is_the_analytic_field(gaussian_flow, affine, spd):
    """The affine least-squares fit of the plugin's RF targets (eq 18) at fixed t equals f* (SPEC §4.1)."""
    cov = spd(2, 0)
    exact = gaussian_flow(MEAN, cov[None])
    gen = torch.Generator().manual_seed(1)
    data = MEAN + torch.randn(200_000, 2, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    learner = VelocityFlow(network={"name": "mlp", "hidden": 8, "depth": 1}, event_shape=(2,)).double()
    t = torch.full((data.shape[0],), 0.6, dtype=torch.float64)
    a, c = _regress(FlowMatching().path_sample(learner, Batch(data), gen, t=t))
    a_star, c_star = affine(lambda x: exact.field(x, 0.6), 2)
    assert torch.allclose(a, a_star, atol=0.02) and torch.allclose(c, c_star, atol=0.02), (a, a_star, c, c_star)


def test_ve_path_optimum_is_the_vp_pf_ode_of_the_gaussian_denoiser():
    """On the VE path the RF optimum is ``sigma'_t (x - D(x; sigma_t)) / sigma_t`` (SPEC §4.1, §4.5.3)."""
    sigma_max, s, t = 5.0, 0.7, 0.4
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    data = mean + s * torch.randn(200_000, 2, generator=gen, dtype=torch.float64)
    flow = VelocityFlow(network={"name": "mlp", "hidden": 8, "depth": 1}, event_shape=(2,), path="ve",
                        source={"name": "gaussian", "std": sigma_max}).double()
    a, c = _regress(FlowMatching().path_sample(flow, Batch(data), gen,
                                               t=torch.full((data.shape[0],), t, dtype=torch.float64)))
    sigma, sigma_dot = (1 - t) * sigma_max, -sigma_max
    denoiser = lambda x: mean + s ** 2 / (s ** 2 + sigma ** 2) * (x - mean)  # noqa: E731
    probes = torch.cat([torch.zeros(1, 2), torch.eye(2)]).double()
    expected = sigma_dot * (probes - denoiser(probes)) / sigma
    fitted = probes @ a.T + c
    assert torch.allclose(fitted, expected, atol=0.03), (fitted, expected)


def test_ode_log_prob_of_the_analytic_flow_is_the_gaussian_density(gaussian_flow, spd):
    cov = spd(2, 3)
    flow = gaussian_flow(MEAN, cov[None])
    x = MEAN + torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(MEAN[0], cov).log_prob(x)
    got = log_prob(flow, x, steps=200).nats
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_training_learns_a_gaussian_target():
    """A short rectified-flow run on N(m, S) data reproduces its moments (the model really learns)."""
    from diffflow_core import build

    gen = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    data = torch.tensor([2.0, -1.0]) + torch.randn(4000, 2, generator=gen) @ torch.linalg.cholesky(cov).T
    model = build(preset="rectified-flow", data=Dataset(data), train={"steps": 1000, "ema": 0.0, "progress": False},
                  flow={"network": {"hidden": 64, "depth": 2}})
    model.fit()
    x = model.sample(4000, 20, seed=1, solver="heun").x
    assert torch.allclose(x.mean(0), data.mean(0), atol=0.1), x.mean(0)
    assert torch.allclose(torch.cov(x.T), torch.cov(data.T), atol=0.15), torch.cov(x.T)
    assert math.isfinite(float(x.sum()))
