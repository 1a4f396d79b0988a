"""PF-ODE log_prob against closed forms: Gaussian data with the analytic EDM denoiser (SPEC §1.7, §2.6)."""
import math

import pytest
import torch

from diffflow_core import Flow, registry
from diffflow_core.errors import ConfigError
from diffflow_core.likelihood import divergence, log_prob


class GaussianEDM(Flow):
    """EDM PF-ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` for data ``N(0, diag(var))`` (exact denoiser,
    ``D = var / (var + sigma^2) x``, SPEC §2.6)."""

    singular_end = True

    def __init__(self, var, sigma_max=80.0):
        super().__init__()
        self.var = torch.as_tensor(var, dtype=torch.float64)
        self.sigma_max = sigma_max
        self.event_shape = (self.var.numel(),)

    def drift(self, x, t):
        denoised = self.var / (self.var + t**2) * x
        return (x - denoised) / t

    def time_grid(self, steps):
        return registry("grids").get("edm")(steps, sigma_max=self.sigma_max).double()

    def prior_log_prob(self, x):
        # the exact marginal at the prior end, N(0, var + sigma_max^2): isolates the integrator's error
        return analytic(x, self.var + self.sigma_max**2)


def analytic(x, var):
    return -0.5 * (x.pow(2) / var + torch.log(2 * math.pi * var)).sum(1)


@pytest.mark.parametrize("var", [[0.49], [0.09, 1.44]])
def test_pf_ode_log_prob_matches_gaussian_density(var):
    flow = GaussianEDM(var)
    var_t = torch.tensor(var, dtype=torch.float64)
    x = torch.randn(64, len(var), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * var_t.sqrt() * 1.5
    result = log_prob(flow, x, steps=1024, solver="heun")
    assert result.nats.dtype == torch.float64 and result.nats.shape == (64,)
    assert (result.nats - analytic(x, var_t)).abs().max() < 1e-3
    assert torch.allclose(result.bpd, -result.nats / (len(var) * math.log(2)))
    assert result.nfe == 2 * 1024


def test_coarse_grid_is_less_accurate_so_the_test_above_can_fail():
    flow = GaussianEDM([0.09, 1.44])
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    coarse = log_prob(flow, x, steps=4, solver="euler")
    assert (coarse.nats - analytic(x, torch.tensor([0.09, 1.44], dtype=torch.float64))).abs().max() > 1e-2


def test_hutchinson_is_unbiased_and_exact_trace_is_exact():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(4000, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    v = x @ a.T
    exact = divergence(v, x, None)
    assert torch.allclose(exact, torch.full_like(exact, float(torch.trace(a))))
    eps = torch.randint(0, 2, x.shape, generator=gen).double() * 2 - 1
    estimate = divergence(x @ a.T, x, eps)
    assert torch.allclose(estimate, ((eps @ a) * eps).sum(1))
    stderr = float(estimate.std()) / math.sqrt(x.shape[0])
    assert abs(float(estimate.mean()) - float(torch.trace(a))) < 4 * stderr


def test_hutchinson_log_prob_is_seeded_and_close_on_average():
    flow = GaussianEDM([0.3, 0.8, 1.1])
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    one = log_prob(flow, x, steps=64, exact=False, seed=5)
    again = log_prob(flow, x, steps=64, exact=False, seed=5)
    assert torch.equal(one.nats, again.nats)
    exact = log_prob(flow, x, steps=64, exact=True)
    # a diagonal Jacobian makes Rademacher Hutchinson exact: the two paths must agree
    assert torch.allclose(one.nats, exact.nats, atol=1e-10)


def test_dequantize_adds_log_bin_width_bound():
    flow = GaussianEDM([1.0])
    x = torch.zeros(4, 1, dtype=torch.float64)
    result = log_prob(flow, x, steps=512, dequantize=1e-3, seed=0)
    # for a tiny bin the bound is log p(x) + log(delta) up to O(delta)
    expected = analytic(x, torch.tensor([1.0], dtype=torch.float64)) + math.log(1e-3)
    assert (result.nats - expected).abs().max() < 1e-3


def test_bad_input_is_rejected_before_work():
    flow = GaussianEDM([1.0, 1.0])
    with pytest.raises(ConfigError, match="x: expected particles of shape"):
        log_prob(flow, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="dequantize"):
        log_prob(flow, torch.zeros(3, 2, dtype=torch.float64), dequantize=0)
    with pytest.raises(ConfigError, match="model_or_flow"):
        log_prob(object(), torch.zeros(3, 2))


def test_stochastic_flow_without_pf_ode_is_rejected():
    class Noisy(Flow):
        def drift(self, x, t):
            return -x

        def diffusion(self, t):
            return 1.0

    with pytest.raises(ConfigError, match="probability-flow ODE"):
        log_prob(Noisy(), torch.zeros(3, 2))


def test_score_plugin_edm_flow_with_exact_denoiser():
    """The score plugin's EDM flow (its own prior N(0, sigma_max^2)): Gaussian and ring5 closed forms."""
    testing = pytest.importorskip("diffflow_score.testing")
    from diffflow_core.data import load_dataset

    flow = testing.exact_flow(testing.gaussian_denoiser(0.7), "edm", event_shape=(2,)).double()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.7
    result = log_prob(flow, x, steps=1024)
    assert (result.nats - analytic(x, torch.full((2,), 0.49, dtype=torch.float64))).abs().max() < 1e-3
    ring = load_dataset("ring5", n_train=100, n_test=48)
    flow = testing.exact_flow(ring.denoise, "edm", event_shape=(2,))
    test = ring.test.double()
    nll = log_prob(flow.double(), test, steps=256).mean_nll
    assert abs(nll - float(-ring.log_prob(test).mean())) < 0.01
