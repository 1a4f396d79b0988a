"""GAN losses (SPEC §2.4): optimal discriminators and the particle drifts they induce, against closed forms."""
import math

import pytest
import torch
from torch import nn

from diffflow_core.errors import ConfigError
from diffflow_discriminator.flow import DiscriminatorFlow
from diffflow_discriminator.losses import LOSSES, get_loss, gradient_penalty

M_P, S_P = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.8  # data p
M_R, S_R = torch.tensor([-0.7, 0.4], dtype=torch.float64), 1.3  # particles rho


def log_gauss(x, m, s):
    return -0.5 * ((x - m) ** 2).sum(-1) / s**2 - x.shape[-1] * math.log(s * math.sqrt(2 * math.pi))


class OptimalLogit(nn.Module):
    """``f*(x) = log p(x) - log rho(x)`` of two isotropic Gaussians (the optimal vanilla discriminator)."""

    def forward(self, x, t=None, y=None):
        return (log_gauss(x, M_P, S_P) - log_gauss(x, M_R, S_R))[:, None]


def grad_log_ratio(x):
    return -(x - M_P) / S_P**2 + (x - M_R) / S_R**2


@pytest.fixture
def points():
    return torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2


@pytest.mark.parametrize("name, weight", [
    ("vanilla", lambda d: d),                   # G minimises log(1 - D): D grad log(p/rho)
    ("non-saturating", lambda d: 1 - d),        # G maximises log D: (1 - D) grad log(p/rho)
    ("wgan", lambda d: torch.ones_like(d)),     # IPM: grad f
    ("hinge", lambda d: torch.ones_like(d)),
])
def test_drift_at_optimal_discriminator_matches_closed_form(name, weight, points):
    eta = 2.5
    flow = DiscriminatorFlow(network=OptimalLogit(), loss=name, eta=eta, time_conditioned=False)
    d = torch.sigmoid(log_gauss(points, M_P, S_P) - log_gauss(points, M_R, S_R))
    expected = eta * weight(d)[:, None] * grad_log_ratio(points)
    torch.testing.assert_close(flow.drift(points, torch.zeros(())), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["vanilla", "non-saturating"])
def test_log_ratio_is_the_pointwise_optimum_of_eq15(name, points):
    """``p a'(f) - rho b'(f) = 0`` at ``f = log(p / rho)``: the integrand of eq 15 is stationary there."""
    loss = get_loss(name)
    p, rho = log_gauss(points, M_P, S_P).exp(), log_gauss(points, M_R, S_R).exp()
    f = (p / rho).log().requires_grad_(True)
    (da,) = torch.autograd.grad(loss.a(f).sum(), f)
    (db,) = torch.autograd.grad(loss.b(f).sum(), f)
    torch.testing.assert_close(p * da - rho * db, torch.zeros_like(p), atol=1e-12, rtol=0)
    # and it is a maximum: moving f either way lowers the objective
    for shift in (-0.1, 0.1):
        g = f.detach() + shift
        assert bool((p * loss.a(g) - rho * loss.b(g) < p * loss.a(f) - rho * loss.b(f)).all())


def test_discriminator_loss_sign_convention():
    """High logits on real data and low on fake data lower every discriminator loss."""
    good, bad = torch.full((8,), 3.0), torch.full((8,), -3.0)
    for loss in LOSSES.values():
        assert loss.discriminator_loss(good, bad) < loss.discriminator_loss(bad, good)


@pytest.mark.parametrize("center", [0.0, 1.0])
def test_gradient_penalty_of_linear_critic(center):
    w = torch.tensor([3.0, -4.0], dtype=torch.float64)
    real = torch.randn(16, 2, dtype=torch.float64)
    fake = torch.randn(16, 2, dtype=torch.float64)
    gp = gradient_penalty(lambda x, t: x @ w, real, fake, None, torch.Generator().manual_seed(0), center)
    assert float(gp) == pytest.approx((5.0 - center) ** 2, rel=1e-12)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ConfigError, match="did you mean 'hinge'"):
        get_loss("hinje")
    with pytest.raises(ConfigError, match="eta"):
        DiscriminatorFlow(network=OptimalLogit(), eta=0.0)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_a_batch_normalised_discriminator_sees_real_and_fake_batches_apart(norm):
    """With batch norm the loss is the one of two separate passes (the statistics the generator's drift sees on
    fakes alone); without it one joint pass gives the same numbers."""
    from diffflow_discriminator.losses import DiscriminatorLoss, batch_normalised

    torch.manual_seed(0)
    flow = DiscriminatorFlow(network={"name": "dcgan-discriminator", "width": 4, "norm": norm},
                             loss="non-saturating", time_conditioned=False, event_shape=(1, 8, 8))
    real, fake = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8) + 1.0
    assert batch_normalised(flow.net) == (norm == "batch")
    apart = flow.loss.discriminator_loss(flow.logit(real), flow.logit(fake))
    torch.testing.assert_close(DiscriminatorLoss()(flow, real, fake, None, None), apart)
    flow.net.eval()
    assert not batch_normalised(flow.net)
