"""Fidelity of the DiffFlow SDE and its rows (SPEC §1.3-1.5, §1.8) on Gaussian targets with closed forms."""
import math

import pytest
import torch

from diffflow_core.data.mixture import GaussianMixture
from diffflow_core.errors import ConfigError
from diffflow_kl.sde import DiffFlow, langevin
from diffflow_kl.logits import DensityRatio
from diffflow_kl.rows import VE, VP, Constant, GAN
from diffflow_kl.scores import AnalyticSource
from diffflow_solvers.solvers import Euler, EulerMaruyama

F64 = torch.float64


def gaussian(mean, std, dim=1):
    return GaussianMixture([1.0], [[mean] * dim], std, n_train=2, n_test=2)


def moments_at(flow, x0, times, seed, solver=None):
    """Particle mean and variance after each step of an Euler(-Maruyama) solve."""
    out = []
    solver = solver or EulerMaruyama()
    solver.solve(flow, x0, times, generator=torch.Generator().manual_seed(seed),
                 callback=lambda info: out.append((float(info.x.mean()), float(info.x.var()))))
    return out


def test_lambda_invariance_matches_the_moment_ode():
    """SPEC §1.8.1: q = N(mu, s^2), f = a x, constant beta, gamma: p_t = N(m, v) for every lambda."""
    mu, s, sigma, a, beta, gamma = 1.5, 0.8, 0.3, -0.5, 1.2, 0.7
    target = gaussian(mu, s)
    S = s * s + sigma * sigma
    k = a - beta / S
    m0, v0, horizon, steps = -1.0, 2.0, 0.6, 100
    m_exact = -beta * mu / (S * k) + (m0 + beta * mu / (S * k)) * math.exp(k * horizon)
    v_exact = -gamma / k + (v0 + gamma / k) * math.exp(2 * k * horizon)
    x0 = m0 + math.sqrt(v0) * torch.randn(40_000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    results = []
    for lam in (0.0, 1.0, 2.0):
        flow = DiffFlow(Constant(beta, gamma, lam, sigma, decay=-a, horizon=horizon), target=target,
                        particles="gaussian", event_shape=(1,))
        m, v = moments_at(flow, x0, torch.linspace(0, horizon, steps + 1, dtype=F64), seed=1)[-1]
        results.append((m, v))
        assert m == pytest.approx(m_exact, abs=1.5e-2)
        assert v == pytest.approx(v_exact, abs=1.5e-2)
    assert abs(v_exact - v0) > 0.5 and abs(m_exact - m0) > 0.5  # the flow really moved the law


@pytest.mark.parametrize("row", [VE(sigma_min=0.05, sigma_max=4.0), VP(beta_min=0.1, beta_max=12.0, eps=1e-2)])
def test_sdm_rows_keep_the_smoothed_marginals(row):
    """SPEC §1.8.2: from p_0 = q_sigma(T), the VE/VP reverse SDE keeps p_t = q_sigma(T - t)."""
    mu, s = 1.0, 0.5
    target = gaussian(mu, s)
    flow = DiffFlow(row, target=target, particles=None, event_shape=(1,))
    times = row.times(200).to(F64)

    def law(t):
        sig = float(row.sigma(torch.as_tensor(t, dtype=F64)))
        if row.kind == "ve":
            return mu, s * s + sig * sig
        return math.sqrt(1 - sig ** 2) * mu, (1 - sig ** 2) * s * s + sig ** 2

    m0, v0 = law(times[0])
    x0 = m0 + math.sqrt(v0) * torch.randn(40_000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    traj = moments_at(flow, x0, times, seed=2)
    for i in (49, 99, 199):
        m_exact, v_exact = law(times[i + 1])
        m, v = traj[i]
        assert m == pytest.approx(m_exact, abs=0.02 * math.sqrt(v_exact) + 0.01)
        assert v == pytest.approx(v_exact, rel=0.04)
    (ma, va), (mb, vb) = law(times[0]), law(times[-1])
    assert abs(va - vb) > 0.7 or abs(ma - mb) > 0.7  # the marginals really travel


def gaussian_kl(m1, v1, m2, v2):
    return 0.5 * (v1 / v2 + (m1 - m2) ** 2 / v2 - 1 + math.log(v2 / v1))


def test_kl_decreases_along_langevin_as_in_closed_form():
    """SPEC §1.5 with beta = gamma = 1, lambda = sqrt 2: the OU moments give KL(p_t || q_sigma) in closed form."""
    mu, s, sigma = 2.0, 0.6, 0.2
    S = s * s + sigma * sigma
    flow = langevin(target=gaussian(mu, s), sigma=sigma, horizon=1.0, event_shape=(1,))
    m0, v0 = -1.0, 1.5
    x0 = m0 + math.sqrt(v0) * torch.randn(40_000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    traj = moments_at(flow, x0, flow.time_grid(200).to(F64), seed=3)
    kls, exact = [], []
    for i in range(19, 200, 20):
        t = (i + 1) / 200
        m_t = mu + (m0 - mu) * math.exp(-t / S)
        v_t = S + (v0 - S) * math.exp(-2 * t / S)
        kls.append(gaussian_kl(*traj[i], mu, S))
        exact.append(gaussian_kl(m_t, v_t, mu, S))
    assert all(b < a for a, b in zip(exact, exact[1:]))
    assert all(b < a for a, b in zip(kls, kls[1:]))
    assert kls == pytest.approx(exact, rel=0.05, abs=2e-3)


def spacing_kl(x, target):
    """KL(p || q) of sorted 1-D particles, with p from the quantile spacings (p(x_i) ~ 2 / (N (x_{i+1} - x_{i-1})))."""
    xs, _ = torch.sort(x[:, 0])
    n = xs.numel()
    log_p = math.log(2.0 / n) - torch.log(xs[2:] - xs[:-2])
    return float((log_p - target.log_prob(xs[1:-1, None])).mean())


@pytest.mark.parametrize("loss", ["vanilla", "ns"])
def test_kl_decreases_along_the_gan_rows(loss):
    """SPEC §1.5/§1.8.3: beta = gamma = D (or 1 - D), lambda = 0, D the optimal discriminator (here of q against a
    KDE of the particles): KL(p_t || q) decreases. Particles start on the quantiles of N(-1, 0.5^2)."""
    target = gaussian(1.0, 0.7)
    n = 800
    u = (torch.arange(n, dtype=F64) + 0.5) / n
    x = (-1.0 + 0.5 * math.sqrt(2) * torch.erfinv(2 * u - 1))[:, None]
    flow = DiffFlow(GAN(loss, horizon=2.0), target=target, particles="kde", bandwidth=0.2, event_shape=(1,))
    kls = [spacing_kl(x, target)]
    solver = Euler()
    times = flow.time_grid(40).to(F64)
    for k in range(4):
        x = solver.solve(flow, x, times[10 * k: 10 * k + 11]).x
        kls.append(spacing_kl(x, target))
    assert all(b < a - 1e-3 for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.8 * kls[0]


def test_gan_weight_identities_hold_pointwise():
    """SPEC §1.4: with D = sigmoid(d), -grad log(1 - D) = D grad d and grad log D = (1 - D) grad d; the density
    ratio's closed-form gradient equals autograd; the GAN row's score form equals its discriminator form."""
    q = GaussianMixture([1.0, 2.0], [[0.0, 0.0], [2.0, 1.0]], [0.5, 0.8], n_train=2, n_test=2)
    p = GaussianMixture([1.0], [[1.0, -1.0]], 1.2, n_train=2, n_test=2)
    ratio = DensityRatio(AnalyticSource(q), AnalyticSource(p))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64).requires_grad_(True)
    sigma, t = torch.tensor(0.3, dtype=F64), torch.tensor(0.0, dtype=F64)
    d = ratio.logit(x, t, sigma)
    (grad_d,) = torch.autograd.grad(d.sum(), x, retain_graph=True)
    (g_vanilla,) = torch.autograd.grad(-torch.log1p(-torch.sigmoid(d)).sum(), x, retain_graph=True)
    (g_ns,) = torch.autograd.grad(torch.nn.functional.logsigmoid(d).sum(), x)
    D = torch.sigmoid(d).detach()[:, None]
    assert torch.allclose(g_vanilla, D * grad_d, atol=1e-12)
    assert torch.allclose(g_ns, (1 - D) * grad_d, atol=1e-12)
    assert torch.allclose(ratio.grad(x.detach(), t, sigma), grad_d, atol=1e-10)
    for loss in ("vanilla", "ns"):
        forms = [DiffFlow(GAN(loss, sigma=0.3), target=q, particles=p, form=f).drift(x.detach(), t)
                 for f in ("score", "discriminator")]
        assert torch.allclose(*forms, atol=1e-12)
        w = D if loss == "vanilla" else 1 - D
        assert torch.allclose(forms[0], w * grad_d, atol=1e-10)


def test_probability_flow_row_and_flags():
    target = gaussian(0.0, 1.0, dim=2)
    ode = DiffFlow(VP(), target=target, particles="target", noise_scale=0.0)
    sde = DiffFlow(VP(), target=target, particles="target")
    assert not ode.is_stochastic and sde.is_stochastic
    x = torch.randn(5, 2, dtype=F64)
    t = torch.tensor(0.3, dtype=F64)
    b = float(VP().b(t))
    expected = 0.5 * b * x + 0.5 * b * target.smoothed_score(x, VP().sigma(t), "vp")
    assert torch.allclose(ode.drift(x, t), expected, atol=1e-12)
    assert torch.allclose(sde.ode_drift(x, t), expected, atol=1e-12)
    assert float(sde.diffusion(t)) == pytest.approx(math.sqrt(b))


def test_bad_configuration_is_rejected_before_work():
    target = gaussian(0.0, 1.0, dim=2)
    with pytest.raises(ConfigError, match="form"):
        DiffFlow(target=target, form="logit")
    with pytest.raises(ConfigError, match="row"):
        DiffFlow("cosine", target=target)
    with pytest.raises(ConfigError, match="target"):
        DiffFlow(target="auto")
    with pytest.raises(ConfigError, match="particles"):
        DiffFlow(target=target, particles="nn")
    with pytest.raises(ConfigError, match="sigmas"):
        DiffFlow({"name": "ladder", "sigmas": [0.1, 1.0]}, target=target)
