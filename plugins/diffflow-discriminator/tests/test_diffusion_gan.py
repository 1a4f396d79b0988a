"""DiffFlow's Diffusion-GAN and TDPM rows (SPEC §1.2, §1.4) with learned parts: drift assembly and schedules."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_core.plugins import registry
from diffflow_discriminator.diffusion_gan import DiffusionGanFlow

SMALL = {"name": "mlp", "hidden": 16, "depth": 1}


class Quadratic(nn.Module):
    """IPM critic ``f(x, t) = -|x|^2 / 2``: ``grad h = -x``."""

    def forward(self, x, t=None, y=None):
        return -0.5 * (x ** 2).sum(1, keepdim=True)


def flow(row, **kw):
    return DiffusionGanFlow(row=row, network=Quadratic(), score_network=SMALL, loss="wgan", **kw)


def test_diffusion_gan_drift_is_reverse_sde_plus_gan_correction():
    f = flow("diffusion-gan", eta=2.0, sigma_max=3.0)
    x = torch.randn(10, 2)
    t = torch.tensor(0.25)
    sigma = 3.0 * 0.75
    expected = 2 * sigma * 3.0 * f.score_model.score(x, torch.full((10,), sigma)) + 2.0 * (-x)
    torch.testing.assert_close(f.drift(x, t), expected.detach(), rtol=1e-5, atol=1e-5)
    assert float(f.diffusion(t)) == pytest.approx((2 * sigma * 3.0) ** 0.5)


def test_tdpm_switches_from_gan_phase_to_reverse_sde():
    f = flow("tdpm", eta=2.0, sigma_trunc=0.5, t1=0.5)
    x = torch.randn(10, 2)
    torch.testing.assert_close(f.drift(x, torch.tensor(0.2)), -2.0 * x)  # GAN phase: no score, no noise
    assert float(f.diffusion(torch.tensor(0.2))) == 0.0
    t = torch.tensor(0.75)  # sigma = 0.5 * 0.25 / 0.5 = 0.25, g^2 = 2 * 0.25 * 0.5 / 0.5
    expected = 0.5 * f.score_model.score(x, torch.full((10,), 0.25))
    torch.testing.assert_close(f.drift(x, t), expected.detach(), rtol=1e-5, atol=1e-6)
    assert f.gan_horizon == 0.5


def test_presets_train_score_and_discriminator_jointly():
    data = torch.randn(300, 2) + 1
    for preset in ("diffusion-gan", "tdpm"):
        model = build(preset=preset, data=data, flow={"network": SMALL, "score_network": SMALL},
                      objective={"flow_steps": 4}, train={"steps": 3, "progress": False})
        players = model.objective.players(model)
        assert [p.name for p in players] == ["discriminator", "score"]
        assert not set(map(id, players[0].parameters)) & set(map(id, players[1].parameters))
        history = model.fit()
        assert {"loss/discriminator", "loss/score"} <= set(history.records[-1])
        assert model.sample(20, steps=4, seed=0).x.shape == (20, 2)
    with pytest.raises(ConfigError, match="row"):
        DiffusionGanFlow(row="sgm", network=SMALL, score_network=SMALL)


class GaussianMarginals:
    """Closed-form marginals ``p_t = N(m(t), v(t) I)`` of the DiffFlow SDE with ``f = 0`` and x-independent
    ``beta(t), gamma(t)`` towards ``q = N(mu, s^2 I)`` smoothed by VE ``sigma(t)`` (SPEC §1.8.1):
    ``m' = beta (mu - m) / S``, ``v' = -2 beta v / S + 2 gamma``, ``S = s^2 + sigma^2``; RK4 on a fine grid
    (plain floats: the ODE is the same in every coordinate)."""

    def __init__(self, mu, s, m0, v0, sigma, beta, gamma, steps=1000):
        self.mu, self.s2, self.sigma = mu, s * s, sigma

        def rate(t, state):
            big_s = self.s2 + sigma(t) ** 2
            *m, v = state
            return [beta(t) * (mu_i - m_i) / big_s for mu_i, m_i in zip(mu.tolist(), m)] + \
                [-2 * beta(t) * v / big_s + 2 * gamma(t)]

        def axpy(a, xs, ys):
            return [y + a * x for x, y in zip(xs, ys)]

        h, state, states = 1 / steps, m0.tolist() + [v0], []
        for i in range(steps):
            states.append(state)
            t = i * h
            k1 = rate(t, state)
            k2 = rate(t + h / 2, axpy(h / 2, k1, state))
            k3 = rate(t + h / 2, axpy(h / 2, k2, state))
            k4 = rate(t + h, axpy(h, k3, state))
            state = [y + h / 6 * (a + 2 * b + 2 * c + d) for y, a, b, c, d in zip(state, k1, k2, k3, k4)]
        table = torch.tensor(states + [state], dtype=torch.float64)
        self.ts = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        self.ms, self.vs = table[:, :-1], table[:, -1]

    def at(self, t):
        """``(m(t) [N, 2], v(t) [N, 1])`` by linear interpolation, ``t`` ``[N]``."""
        pos = t.double().clamp(0, 1) * (len(self.ts) - 1)
        i = pos.floor().long().clamp(max=len(self.ts) - 2)
        w = (pos - i)[:, None]
        return self.ms[i] * (1 - w) + self.ms[i + 1] * w, self.vs[i, None] * (1 - w) + self.vs[i + 1, None] * w


class OptimalLogit(nn.Module):
    """``d_t(x) = log q_sigma(t)(x) - log p_t(x)`` for the Gaussian marginals (the optimal discriminator)."""

    def __init__(self, law):
        super().__init__()
        self.law = law

    def forward(self, x, t=None, y=None):
        m, v = self.law.at(t)
        big_s = self.law.s2 + self.law.sigma(t.double())[:, None] ** 2
        log_q = -((x - self.law.mu) ** 2).sum(1, keepdim=True) / (2 * big_s) - torch.log(big_s)
        log_p = -((x - m) ** 2).sum(1, keepdim=True) / (2 * v) - torch.log(v)
        return log_q - log_p


class SmoothedScore(nn.Module):
    def __init__(self, mu, s2):
        super().__init__()
        self.mu, self.s2 = mu, s2

    def score(self, x, sigma):
        return -(x - self.mu) / (self.s2 + sigma[:, None] ** 2)


@pytest.mark.parametrize("churn", [0.0, 0.5, 1.0, "slide"])
def test_churn_schedule_slides_between_gan_and_sdm_forms_at_fixed_marginals(churn):
    """SPEC §1.3: with the optimal discriminator and the exact smoothed score, every churn (kappa) gives the
    same marginals, the closed-form p_1 of the Diffusion-GAN row's (beta, gamma) (wgan critic: omega = 1)."""
    mu, s, sigma_max, w = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5, 1.0, 0.3
    m0, v0 = torch.tensor([-2.0, 1.5], dtype=torch.float64), 2.0

    def sigma(t):
        return sigma_max * (1 - t)

    def g2(t):
        return 2 * sigma(t) * sigma_max

    law = GaussianMarginals(mu, s, m0, v0, sigma, beta=lambda t: g2(t) + w, gamma=lambda t: g2(t) / 2 + w)
    f = DiffusionGanFlow(row="diffusion-gan", network=OptimalLogit(law), score_network=SMALL, loss="wgan", eta=w,
                         sigma_max=sigma_max, churn=churn).double()
    f.score_model = SmoothedScore(mu, s * s)
    if churn == 0.0:
        assert float(f.diffusion(torch.tensor(0.3))) == 0.0
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(10000, 2, generator=gen, dtype=torch.float64)
    x0 = m0 + v0 ** 0.5 * (eps - eps.mean(0)) / eps.std(0)  # exact initial moments: only the flow's error is left
    solver = registry("solvers").create("euler-maruyama")
    trajectory = solver.solve(f, x0, f.time_grid(200), generator=gen, record=True).trajectory
    for k in (50, 200):  # t = 0.25, where p_t is still far from q, and t = 1
        x, m, v = trajectory[k], law.ms[5 * k], float(law.vs[5 * k])
        torch.testing.assert_close(x.mean(0), m, rtol=0, atol=0.03)
        assert x.var(0).tolist() == pytest.approx([v, v], rel=0.04)
    assert float((law.ms[-1] - mu).norm()) > 0.3  # p_1 is not q: the weights, not just the target, are seen


class Bowl(nn.Module):
    """A time-dependent, non-quadratic logit ``f(x, t) = -(1 + t) |x - c|^2 / 2 + sin(x_0)``."""

    def forward(self, x, t=None, y=None):
        c = torch.tensor([0.5, -1.0], dtype=x.dtype)
        return (-(1 + t[:, None]) * 0.5 * ((x - c) ** 2).sum(1, keepdim=True) + torch.sin(x[:, :1]))


@pytest.mark.parametrize("row, churn, t", [("diffusion-gan", 1.0, 0.3), ("diffusion-gan", 0.4, 0.3),
                                          ("diffusion-gan", "slide", 0.7), ("diffusion-gan", 0.0, 0.0),
                                          ("tdpm", 0.4, 0.2), ("tdpm", 0.4, 0.8), ("tdpm", 1.0, 0.8)])
def test_drift_equals_the_discriminator_form_differentiated_in_one_piece(row, churn, t):
    """The drift keeps only the terms of nonzero weight and applies a lone weight to the gradient: it equals
    ``grad_x [w h(f) + ((1 - kappa) g^2 / 2) f] + ((1 + kappa) g^2 / 2) s_q`` computed directly (SPEC §1.2)."""
    f = DiffusionGanFlow(row=row, network=Bowl(), score_network=SMALL, loss="non-saturating", eta=2.0,
                         sigma_max=3.0, churn=churn).double()
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    time = torch.tensor(t, dtype=torch.float64)
    kappa = t if churn == "slide" else churn
    if row == "diffusion-gan":
        sigma, g2, w = 3.0 * (1 - t), 2 * 3.0 * (1 - t) * 3.0, 2.0
    elif t < 0.5:
        sigma, g2, w = 0.5, 0.0, 2.0
    else:
        sigma, g2, w = 0.5 * (1 - t) / 0.5, 2 * 0.5 * (1 - t) / 0.5 * 0.5 / 0.5, 0.0
    xg = x.clone().requires_grad_(True)
    logit = f.net(xg, time.expand(16)).squeeze(1)
    (grad,) = torch.autograd.grad((w * -F.softplus(-logit) + g2 * (1 - kappa) / 2 * logit).sum(), xg)
    expected = grad + g2 * (1 + kappa) / 2 * f.score_model.score(x, torch.full((16,), sigma, dtype=torch.float64))
    torch.testing.assert_close(f.drift(x, time), expected.detach(), rtol=1e-12, atol=1e-12)
    assert f.diffusion(time) == pytest.approx((kappa * g2) ** 0.5, rel=1e-12)
    assert f.g2(time) == pytest.approx(g2, rel=1e-12)


@pytest.mark.parametrize("churn", [1.0, "slide"])
def test_stochastic_simulation_reaches_the_closed_form_marginal_at_each_particles_step(churn):
    """Training particles (Algorithm 3 step 2 on the Diffusion-GAN row, Euler-Maruyama, each particle stopped
    at its own ``k``) with the optimal discriminator and exact score have the closed-form law ``p_{k/N}``."""
    mu, s, w, steps, n = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5, 0.3, 100, 6000

    def sigma(t):
        return 1 - t

    law = GaussianMarginals(mu, s, torch.zeros(2, dtype=torch.float64), 1.0, sigma,
                            beta=lambda t: 2 * sigma(t) + w, gamma=lambda t: sigma(t) + w)
    f = DiffusionGanFlow(row="diffusion-gan", network=OptimalLogit(law), score_network=SMALL, loss="wgan", eta=w,
                         sigma_max=1.0, churn=churn).double()
    f.score_model = SmoothedScore(mu, s * s)
    gen = torch.Generator().manual_seed(3)
    eps = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x0 = (eps - eps.mean(0)) / eps.std(0)
    k = torch.tensor([25, 100]).repeat_interleave(n // 2)[torch.randperm(n, generator=gen)]
    z = f.simulate(x0, k, steps, gen)
    for stop in (25, 100):
        group = z[k == stop]
        m, v = law.ms[10 * stop], float(law.vs[10 * stop])
        torch.testing.assert_close(group.mean(0), m, rtol=0, atol=0.04)
        assert group.var(0).tolist() == pytest.approx([v, v], rel=0.06)
