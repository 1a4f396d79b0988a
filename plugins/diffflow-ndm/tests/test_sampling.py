"""Sampling and likelihood (SPEC §3.6 items 2, 5, 7): posterior marginals, conditional ODE/SDE marginals, the
exact ODE NLL on Gaussian data, and the ancestral samplers through the kernel's solvers."""
import math

import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_core.likelihood import log_prob
from diffflow_core.plugins import registry
from diffflow_ndm.flow import NDMFlow


def _learned(make_flow, fixed, small_net, x_hat):
    flow = make_flow(network=fixed(x_hat), transform={"name": "learned", "network": small_net, "residual": False})
    return flow


def test_posterior_marginalises_to_the_forward_marginal(make_flow, fixed, small_net):
    n = 50_000
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64).expand(n, 2)
    flow = _learned(make_flow, fixed, small_net, x)
    t, s = torch.full((n,), 0.7, dtype=torch.float64), torch.full((n,), 0.4, dtype=torch.float64)
    z_t = flow.marginal(x, t, torch.randn(x.shape, generator=gen, dtype=torch.float64))
    with torch.no_grad():
        z_s = flow.ancestral_step(z_t, t, s, 1.0, gen)  # x_hat = x: one draw of q(z_s | z_t, x)
        alpha_s, sigma_s = flow.schedule(s[:1])
        target = alpha_s * flow.transform(x[:1], s[:1])
    assert torch.allclose(z_s.mean(0), target[0], atol=4 * float(sigma_s) / math.sqrt(n))
    assert torch.allclose(z_s.std(0), sigma_s.expand(2), rtol=0.015)


@pytest.mark.parametrize("schedule", ["cosine", "flow-matching"])
def test_conditional_ode_moves_along_the_forward_marginal(make_flow, fixed, small_net, schedule):
    """For fixed x the ODE maps z_1 = alpha_1 F(x, 1) + sigma_1 eps to alpha_t F(x, t) + sigma_t eps (same eps):
    Heun's error falls like steps^-2 towards that path."""
    n = 64
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    flow = make_flow(network=fixed(x), schedule=schedule,
                     transform={"name": "learned", "network": small_net, "residual": False})
    eps = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    path = lambda tt: flow.marginal(x, torch.full((n,), tt, dtype=torch.float64), eps)  # noqa: E731
    solver = registry("solvers").create("heun")
    errors = []
    with torch.no_grad():
        for steps in (40, 80):
            z = solver.solve(flow, path(1.0), flow.time_grid(steps).double()).x
            errors.append(float((z - path(0.0)).abs().max()))
    assert errors[1] < 1e-3 and errors[0] / errors[1] > 3, errors


def test_conditional_sde_keeps_the_forward_marginal(make_flow, fixed, small_net):
    """For fixed x the reverse SDE is linear in z, so Euler-Maruyama's mean and variance are propagated exactly
    (``m <- m + dt v(m)``, ``V <- (1 + dt a)^2 V + g^2 |dt|``, ``a = dv/dz``): they must follow
    ``N(alpha_t F(x, t), sigma_t^2)`` up to O(dt), from t = 1 down to t = 0.05."""
    x = torch.tensor([[0.5, -1.5]], dtype=torch.float64)
    flow = make_flow(network=fixed(x), mode="sde", transform={"name": "learned", "network": small_net, "residual": False})
    at = lambda tt: tuple(c[0] for c in flow.schedule(tt.reshape(1)))  # noqa: E731
    errors = []
    with torch.no_grad():
        for steps in (100, 200):
            times = torch.linspace(1.0, 0.05, steps + 1, dtype=torch.float64)
            mean, var = at(times[0])[0] * flow.transform(x, times[:1]), at(times[0])[1] ** 2
            for t0, t1 in zip(times[:-1], times[1:]):
                dt = t1 - t0
                v = flow.drift(torch.cat([mean, mean + 1.0]), t0)  # affine in z, same slope in every dimension
                mean, var = mean + dt * v[:1], (1 + dt * (v[1, 0] - v[0, 0])) ** 2 * var + flow.diffusion(t0) ** 2 * -dt
            alpha, sigma = at(times[-1])
            errors.append(max(float((mean - alpha * flow.transform(x, times[-1:])).abs().max()),
                              abs(float(var.sqrt() / sigma) - 1)))
    assert errors[1] < 0.06 and 1.6 < errors[0] / errors[1] < 2.5, errors  # first order in dt
    z = mean.expand(4000, 2) + var.sqrt() * torch.randn(4000, 2, generator=torch.Generator().manual_seed(2),
                                                        dtype=torch.float64)
    solver = registry("solvers").create("euler-maruyama")
    with torch.no_grad():  # the kernel's solver on samples agrees with the propagated law
        z = solver.solve(flow, z, torch.linspace(0.05, 0.02, 31, dtype=torch.float64),
                         generator=torch.Generator().manual_seed(3)).x
    alpha, sigma = at(torch.tensor(0.02, dtype=torch.float64))
    assert torch.allclose(z.mean(0), (alpha * flow.transform(x, torch.full((1,), 0.02, dtype=torch.float64)))[0],
                          atol=4 * float(sigma) / math.sqrt(4000))
    assert abs(float(z.std(0).mean() / sigma) - 1) < 0.06


def _gaussian_flow(make_flow, gaussian_mean, mean, std):
    flow = make_flow(schedule="cosine")
    flow.net = gaussian_mean(flow.schedule, mean, std)
    flow.precondition = False
    return flow


def _analytic_model_log_prob(flow, x, mean, std):
    """The exact PF-ODE map of N(alpha m, c_t^2), c_t^2 = alpha^2 s^2 + sigma^2, is affine: pull N(0, I) back."""
    (a0, s0), (a1, s1) = (flow.schedule(torch.tensor([v], dtype=torch.float64)) for v in (0.0, 1.0))
    c0, c1 = (a0 ** 2 * std ** 2 + s0 ** 2).sqrt(), (a1 ** 2 * std ** 2 + s1 ** 2).sqrt()
    z1 = a1 * mean + (c1 / c0) * (x - a0 * mean)
    return -0.5 * (z1.pow(2).sum(1) + 2 * math.log(2 * math.pi)) + 2 * torch.log(c1 / c0)


def test_ode_nll_of_gaussian_data_is_analytic_and_heun_is_second_order(make_flow, gaussian_mean):
    mean, std = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.7
    flow = _gaussian_flow(make_flow, gaussian_mean, mean, std)
    x = mean + std * torch.randn(200, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = _analytic_model_log_prob(flow, x, mean, std)
    assert (log_prob(flow, x, steps=200, solver="heun").nats - exact).abs().max() < 3e-4
    truth = -0.5 * ((x - mean) / std).pow(2).sum(1) - math.log(2 * math.pi * std ** 2)
    assert (exact - truth).abs().max() < 0.05  # the model is the data law up to the prior mismatch and sigma_0
    errors = {name: [float((log_prob(flow, x, steps=k, solver=name).nats - exact).abs().mean()) for k in (16, 32, 64)]
              for name in ("euler", "heun")}
    slopes = {name: math.log2(e[0] / e[2]) / 2 for name, e in errors.items()}
    assert 0.8 < slopes["euler"] < 1.3, slopes
    assert 1.7 < slopes["heun"] < 2.4, slopes


@pytest.mark.parametrize("solver", ["ndm-ddpm", "ndm-ddim"])
def test_ancestral_samplers_draw_gaussian_data_with_the_exact_denoiser(make_flow, gaussian_mean, solver):
    mean, std = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.7
    flow = _gaussian_flow(make_flow, gaussian_mean, mean, std)
    sampler = registry("solvers").create(solver)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        out = sampler.solve(flow, flow.prior(20_000, gen).double(), flow.time_grid(200).double(), generator=gen)
    z = out.x
    assert out.nfe == 200 == sampler.nfe(200, flow)
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    assert torch.allclose(z.std(0), torch.full((2,), std, dtype=torch.float64), rtol=0.03)


def test_flow_rejects_bad_settings_before_work(make_flow, fixed):
    with pytest.raises(ConfigError, match="mode: expected one of ode, sde, got 'pf'"):
        make_flow(mode="pf")
    with pytest.raises(ConfigError, match="reverse SDE needs alpha_1 > 0"):
        make_flow(mode="sde", schedule="flow-matching")
    with pytest.raises(ConfigError, match="sigma_data: expected a positive number"):
        make_flow(sigma_data=0.0)
    with pytest.raises(ConfigError, match="ancestral sampling runs from t = 1 down to 0"):
        flow = make_flow()
        registry("solvers").create("ndm-ddim").solve(flow, torch.zeros(3, 2, dtype=torch.float64), [0.0, 1.0])
    with pytest.raises(ConfigError, match="integrates ODEs only"):
        registry("solvers").create("heun").solve(make_flow(mode="sde"), torch.zeros(3, 2, dtype=torch.float64),
                                                 [1.0, 0.0])
    assert not make_flow(mode="ode").is_stochastic and make_flow(mode="sde").is_stochastic
    with pytest.raises(ConfigError, match="clip: expected None or a positive bound"):
        make_flow(clip=0)


def test_clip_bounds_the_sampling_denoiser_but_not_the_likelihood_drift(make_flow, fixed):
    z = torch.randn(6, 2, dtype=torch.float64)
    x_hat = torch.tensor([[3.0, -0.5]], dtype=torch.float64).expand(6, 2)
    t = torch.full((6,), 0.4, dtype=torch.float64)
    clipped, plain = make_flow(network=fixed(x_hat), clip=1.0), make_flow(network=fixed(x_hat))
    bounded = torch.tensor([[1.0, -0.5]], dtype=torch.float64).expand(6, 2)
    assert torch.allclose(clipped.drift(z, t), plain.velocity(z, t, bounded, "ode"))
    assert torch.allclose(clipped.ode_drift(z, t), plain.ode_drift(z, t))  # log_prob sees the unclipped model
    assert not torch.allclose(clipped.drift(z, t), plain.drift(z, t))
    mean_clipped = clipped.ancestral_step(z, t, t - 0.1, 0.0, None)
    assert torch.allclose(mean_clipped, plain.posterior(z, bounded, t, t - 0.1, 0.0)[0])
