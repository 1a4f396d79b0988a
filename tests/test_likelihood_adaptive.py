"""log_prob at a tolerance (issue 22 item 3): the adaptive solver's likelihood against the exact Gaussian NLL.

The score plugin's EDM flow with the exact denoiser of data ``N(0, s^2 I)`` and its own prior ``N(0, sigma_max^2
I)``: its PF-ODE maps ``x(sigma) = x(sigma_max) sqrt((s^2 + sigma^2) / (s^2 + sigma_max^2))``, so the model's law
at the data end of the likelihood solve (sigma_min) is exactly ``N(0, sigma_max^2 (s^2 + sigma_min^2) / (s^2 +
sigma_max^2) I)``: the only error left is the integrator's.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffflow_core import ConfigError, registry
from diffflow_core.likelihood import log_prob

testing = pytest.importorskip("diffflow_score.testing")

F64 = torch.float64
S, SIGMA_MIN, SIGMA_MAX = 0.7, 0.002, 80.0


def gaussian_case(dims: int = 2, n: int = 128):
    flow = testing.exact_flow(testing.gaussian_denoiser(S), "edm", event_shape=(dims,)).double()
    x = torch.randn(n, dims, generator=torch.Generator().manual_seed(0), dtype=F64) * S * 1.5
    var = SIGMA_MAX ** 2 * (S ** 2 + SIGMA_MIN ** 2) / (S ** 2 + SIGMA_MAX ** 2)
    exact = -0.5 * (x.pow(2) / var + math.log(2 * math.pi * var)).sum(1)
    return flow, x, exact


@pytest.mark.parametrize("solver", ["dopri5", "bosh3"])
def test_adaptive_log_prob_matches_the_exact_gaussian_nll_within_1e_3_nats_at_rtol_1e_5(solver):
    flow, x, exact = gaussian_case()
    result = log_prob(flow, x, solver=solver, rtol=1e-5, atol=1e-5)
    assert (result.nats - exact).abs().max() < 1e-3
    assert abs(result.mean_nll - float(-exact.mean())) < 1e-3
    assert 0 < result.nfe < 2 * 256  # the fixed default (Heun, 256 steps) spends 512


def test_the_error_follows_the_tolerance_and_nfe_is_the_count_of_the_solve():
    flow, x, exact = gaussian_case()
    errors, nfes = [], []
    for tol in (1e-3, 1e-5, 1e-7):
        result = log_prob(flow, x, solver="dopri5", rtol=tol, atol=tol)
        errors.append(float((result.nats - exact).abs().max()))
        nfes.append(result.nfe)
    assert errors[0] > errors[1] > errors[2] and nfes[0] < nfes[1] < nfes[2], (errors, nfes)
    solver = registry("solvers").create("dopri5", rtol=1e-5, atol=1e-5)
    assert log_prob(flow, x, solver=solver).nfe == log_prob(flow, x, solver="dopri5", rtol=1e-5, atol=1e-5).nfe


def test_hutchinson_at_a_tolerance_is_seeded_and_exact_for_a_diagonal_jacobian():
    flow, x, _ = gaussian_case(dims=3, n=32)
    one = log_prob(flow, x, solver="dopri5", rtol=1e-6, atol=1e-6, exact=False, seed=2)
    again = log_prob(flow, x, solver="dopri5", rtol=1e-6, atol=1e-6, exact=False, seed=2)
    exact = log_prob(flow, x, solver="dopri5", rtol=1e-6, atol=1e-6, exact=True)
    assert torch.equal(one.nats, again.nats)
    assert torch.allclose(one.nats, exact.nats, atol=1e-8)  # Rademacher eps^T diag eps is the trace


def test_a_tolerance_for_a_fixed_step_solver_or_beside_an_instance_is_refused():
    flow, x, _ = gaussian_case(n=4)
    with pytest.raises(ConfigError, match="rtol/atol: solver 'heun' takes the grid's fixed steps"):
        log_prob(flow, x, solver="heun", rtol=1e-5)
    with pytest.raises(ConfigError, match=r"rtol/atol: expected them on the solver instance \(Dopri5"):
        log_prob(flow, x, solver=registry("solvers").create("dopri5"), atol=1e-5)
