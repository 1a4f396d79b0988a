"""The score flow against closed forms: Gaussian data N(0, s^2) has the ideal denoiser s^2 x / (s^2 + sigma^2)."""
import math

import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_core.plugins import registry
from diffflow_score.flow import ScoreFlow
from diffflow_score.testing import exact_flow, gaussian_denoiser
from diffflow_solvers.testing import fitted_slope

S = 0.5


def solve(flow, solver, steps, n=5000, seed=0, **params):
    generator = torch.Generator().manual_seed(seed)
    x0 = flow.prior(n, generator).double()
    return registry("solvers").create(solver, **params).solve(flow, x0, flow.time_grid(steps), generator=generator).x


def test_edm_heun_matches_the_closed_form_endpoint_at_second_order():
    """SPEC §2.11.1: x(sigma) = x(sigma_max) sqrt((s^2 + sigma^2)/(s^2 + sigma_max^2)); the last step to 0 is Euler."""
    flow = exact_flow(gaussian_denoiser(S), "edm", (1,), sigma_min=0.002, sigma_max=80.0, rho=7.0).double()
    x0 = torch.tensor([[80.0], [-40.0], [10.0]], dtype=torch.float64)
    exact = x0 * math.sqrt(S ** 2 / (S ** 2 + 80.0 ** 2))  # sigma = 0 at the end of the grid
    heun, euler = registry("solvers").create("heun"), registry("solvers").create("euler")
    steps = (8, 16, 32, 64)
    errors = [float((heun.solve(flow, x0, flow.time_grid(n)).x - exact).abs().max()) for n in steps]
    assert errors[-1] < 3e-3  # 0.0018 measured at 64 steps, 0.2 at 8
    assert fitted_slope(steps, errors) < -1.8
    euler_errors = [float((euler.solve(flow, x0, flow.time_grid(n)).x - exact).abs().max()) for n in steps]
    assert -1.3 < fitted_slope(steps, euler_errors) < -0.7
    assert heun.solve(flow, x0, flow.time_grid(64)).nfe == heun.nfe(64, flow) == 2 * 64 - 1  # EDM: none at 0


@pytest.mark.parametrize("parameterisation", ["edm", "vp", "ve"])
@pytest.mark.parametrize("mode,solver,steps", [("ode", "heun", 50), ("sde", "euler-maruyama", 200)])
def test_reverse_sde_and_ode_preserve_the_gaussian_marginals(parameterisation, mode, solver, steps):
    """From the prior, the exact-score reverse SDE / PF-ODE of every schedule ends at N(0, s^2) (SPEC §2.2 eq 9)."""
    flow = exact_flow(gaussian_denoiser(S), parameterisation, (1,), mode=mode).double()
    assert flow.is_stochastic == (mode == "sde")
    x = solve(flow, solver, steps)
    assert abs(float(x.std()) - S) < 0.025  # 5k samples: sampling sd of the std ~0.005
    assert abs(float(x.mean())) < 0.025


def test_vp_marginal_std_along_the_pf_ode_trajectory():
    """The VP PF-ODE keeps law(x_t) = N(0, alpha^2 s^2 + std^2) at every intermediate t."""
    flow = exact_flow(gaussian_denoiser(S), "vp", (1,)).double()
    times = flow.time_grid(100)
    generator = torch.Generator().manual_seed(1)
    heun = registry("solvers").create("heun")
    trajectory = heun.solve(flow, flow.prior(5000, generator).double(), times, record=True).trajectory
    for i in (25, 50, 75):
        t = times[i]
        expected = math.sqrt(float(flow.schedule.alpha(t)) ** 2 * S ** 2 + float(flow.schedule.std(t)) ** 2)
        assert abs(float(trajectory[i].std()) - expected) < 0.02 * expected + 0.01


def test_preconditioning_constants_of_spec_2_6():
    """D = c_skip x + c_out F(c_in x, ln(sigma)/4); with F returning its inputs we read the constants back."""

    class Probe(torch.nn.Module):
        def forward(self, x, c_noise):
            self.seen = (x.clone(), c_noise.clone())
            return torch.ones_like(x)

    probe = Probe()
    flow = ScoreFlow("edm", network=probe, event_shape=(1,)).double()
    sigma, sd = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64), 0.5
    x = torch.tensor([[2.0], [-1.0], [3.0]], dtype=torch.float64)
    d = flow.denoise(x, sigma)
    s = sigma[:, None]
    c_skip, c_out, c_in = sd ** 2 / (s ** 2 + sd ** 2), s * sd / (s ** 2 + sd ** 2).sqrt(), 1 / (s ** 2 + sd ** 2).sqrt()
    torch.testing.assert_close(probe.seen[0], c_in * x)
    torch.testing.assert_close(probe.seen[1], sigma.log() / 4)
    torch.testing.assert_close(d, c_skip * x + c_out)
    torch.testing.assert_close(flow.score(x, sigma), (d - x) / s ** 2)
    # the PF-ODE drift is (x - D)/sigma and the reverse SDE doubles it with g = sqrt(2 sigma) (SPEC §2.2 eq 7)
    torch.testing.assert_close(flow.evaluate_drift(x, sigma), (x - d) / s)
    flow.mode = "sde"
    torch.testing.assert_close(flow.evaluate_drift(x, sigma), 2 * (x - d) / s)
    torch.testing.assert_close(flow.diffusion(sigma), (2 * sigma).sqrt())
    torch.testing.assert_close(flow.ode_drift(x, sigma), (x - d) / s)


def test_score_denoise_epsilon_agree_for_every_parameterisation():
    """Tweedie: D = (x + std^2 s)/alpha and eps_hat = -std s, whatever the network predicts natively."""
    for parameterisation in ("edm", "vp", "ve"):
        flow = exact_flow(gaussian_denoiser(S), parameterisation, (1,)).double()
        t = torch.tensor([0.3, 0.6], dtype=torch.float64)
        x = torch.tensor([[0.7], [-1.2]], dtype=torch.float64)
        alpha, std = flow.schedule.alpha(t)[:, None], flow.schedule.std(t)[:, None]
        var = alpha ** 2 * S ** 2 + std ** 2  # law of x_t
        torch.testing.assert_close(flow.score(x, t), -x / var)
        torch.testing.assert_close(flow.denoise(x, t), (x - std ** 2 * x / var) / alpha)
        torch.testing.assert_close(flow.epsilon(x, t), std * x / var)


def test_vp_and_ve_schedules_satisfy_their_sdes():
    """d std^2/dt = 2 f std^2 + g^2 and d log alpha/dt = f (the forward SDE's moment equations), by autograd."""
    vp = exact_flow(gaussian_denoiser(S), "vp", (1,)).schedule
    ve = exact_flow(gaussian_denoiser(S), "ve", (1,)).schedule
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    (dlog_alpha,) = torch.autograd.grad(vp.alpha(t).log().sum(), t)
    torch.testing.assert_close(dlog_alpha, vp.f(t.detach()))
    torch.testing.assert_close(ve.alpha(t.detach()), torch.ones(3, dtype=torch.float64))
    for schedule in (vp, ve):
        (dvar,) = torch.autograd.grad(schedule.std(t).pow(2).sum(), t)
        u = t.detach()
        torch.testing.assert_close(dvar, 2 * schedule.f(u) * schedule.std(u) ** 2 + schedule.g2(u))
        torch.testing.assert_close(schedule.sigma(u), schedule.std(u) / schedule.alpha(u))


def test_prior_log_prob_is_the_scaled_gaussian():
    flow = exact_flow(gaussian_denoiser(S), "edm", (2,), sigma_max=40.0)
    x = torch.tensor([[3.0, -4.0]])
    expected = torch.distributions.Normal(0.0, 40.0).log_prob(x).sum(1)
    torch.testing.assert_close(flow.prior_log_prob(x), expected)
    assert float(flow.prior(10_000, torch.Generator().manual_seed(0)).std()) == pytest.approx(40.0, rel=0.03)


def test_pf_ode_log_prob_matches_the_gaussian_density():
    """The likelihood module integrates ode_drift: N(0, s^2)'s density up to the solver's O(steps^-2) error."""
    from diffflow_core.likelihood import log_prob

    x = torch.tensor([[0.0], [0.4], [-1.1]], dtype=torch.float64)
    exact = torch.distributions.Normal(0.0, S).log_prob(x)[:, 0]
    for parameterisation in ("edm", "vp"):
        flow = exact_flow(gaussian_denoiser(S), parameterisation, (1,), mode="sde").double()
        result = log_prob(flow, x, steps=256)  # the PF-ODE, whatever the sampling mode
        torch.testing.assert_close(result.nats, exact, atol=2e-3, rtol=0)  # 1.4e-3 (edm), 0.9e-3 (vp) measured


def test_edm_churn_zero_is_heun_and_churn_keeps_the_marginal():
    flow = exact_flow(gaussian_denoiser(S), "edm", (1,)).double()
    torch.testing.assert_close(solve(flow, "edm-churn", 18, n=100), solve(flow, "heun", 18, n=100))
    x = solve(flow, "edm-churn", 40, s_churn=20.0, s_tmin=0.05, s_tmax=50.0)
    assert abs(float(x.std()) - S) < 0.02


def test_annealed_langevin_reaches_the_mixture():
    """SPEC §2.11.2: annealed Langevin with the analytic ring5 score ends near the data (per-mode std 0.5)."""
    from diffflow_core.data import load_dataset

    data = load_dataset("ring5", n_train=1000, n_test=2000)
    flow = exact_flow(data.denoise, "ve", (2,), sigma_max=10.0).double()
    x = solve(flow, "annealed-langevin", 20, n=2000, langevin_steps=20, step_ratio=1.0)
    assert abs(float(x.norm(dim=1).mean()) - float(data.test.double().norm(dim=1).mean())) < 0.1
    # cross-entropy of the samples under the data vs the data's own: -0.08 nats measured (-0.5 at 10x10, r=0.5)
    assert float(data.log_prob(x).mean()) > float(data.log_prob(data.test.double()).mean()) - 0.15


def test_bad_configuration_is_rejected_with_the_field_named():
    with pytest.raises(ConfigError, match="parameterisation"):
        ScoreFlow("ddim", event_shape=(2,))
    with pytest.raises(ConfigError, match="mode"):
        ScoreFlow("edm", mode="langevin", event_shape=(2,))
    with pytest.raises(ConfigError, match="rho: not a parameter of the 'vp' schedule"):
        ScoreFlow("vp", rho=7.0, event_shape=(2,))
    with pytest.raises(ConfigError, match="sigma_min/sigma_max"):
        ScoreFlow("edm", sigma_min=1.0, sigma_max=0.5, event_shape=(2,))
    with pytest.raises(ConfigError, match="num_classes"):
        ScoreFlow("edm", conditional=True, event_shape=(2,))
    with pytest.raises(ConfigError, match="s_churn"):
        registry("solvers").create("edm-churn", s_churn=-1.0)
    vp = exact_flow(gaussian_denoiser(S), "vp", (1,))
    with pytest.raises(ConfigError, match="edm-churn"):
        solve(vp, "edm-churn", 4, n=4)
    sde = exact_flow(gaussian_denoiser(S), "edm", (1,), mode="sde")
    with pytest.raises(ConfigError, match="euler-maruyama"):
        solve(sde, "heun", 4, n=4)


@pytest.mark.parametrize("parameterisation", ["edm", "vp", "ve"])
def test_preconditioned_network_solving_for_the_exact_denoiser_gives_the_exact_score(parameterisation):
    """Every schedule feeds F the VE-scaled input c_in x/alpha and ln(sigma)/4; an F that inverts the EDM
    scalings of the Gaussian denoiser must reproduce the analytic score of x_t (SPEC §2.6 for all three)."""
    sd = 0.5

    class Inverse(torch.nn.Module):
        def forward(self, inputs, c_noise):
            sigma = torch.exp(4 * c_noise)[:, None]
            scaled = inputs * (sigma ** 2 + sd ** 2).sqrt()
            target = S ** 2 * scaled / (S ** 2 + sigma ** 2)
            return (target - sd ** 2 / (sigma ** 2 + sd ** 2) * scaled) / (sigma * sd / (sigma ** 2 + sd ** 2).sqrt())

    flow = ScoreFlow(parameterisation, network=Inverse(), event_shape=(1,), sigma_data=sd).double()
    t = torch.tensor([0.05, 0.4, 0.9], dtype=torch.float64)
    x = torch.tensor([[0.3], [-1.0], [2.0]], dtype=torch.float64)
    var = flow.schedule.alpha(t)[:, None] ** 2 * S ** 2 + flow.schedule.std(t)[:, None] ** 2
    torch.testing.assert_close(flow.score(x, t), -x / var)
