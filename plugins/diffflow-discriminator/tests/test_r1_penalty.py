"""R1 penalty (objective ``gan``, ``r1_weight``): ``gamma / 2 * E||grad_x f(data)||^2`` on the data points only."""
import attrs
import pytest
import torch
from torch import nn

from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_discriminator.losses import r1_penalty

SMALL = {"name": "mlp", "hidden": 16, "depth": 2, "activation": "leaky_relu"}


def data(n=512, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.5 + 1.0


def test_r1_of_a_quadratic_critic_is_the_second_moment():
    """f(y) = -||y - m||^2 / 2 has grad -(y - m), so R1 = E||y - m||^2 exactly, and it is 0 at y = m."""
    y = data().requires_grad_(True)
    m = torch.tensor([0.3, -0.2], dtype=torch.float64)
    value = r1_penalty(-0.5 * (y - m).pow(2).sum(1), y)
    torch.testing.assert_close(value, (y.detach() - m).pow(2).sum(1).mean())
    at_centre = m.expand(4, 2).clone().requires_grad_(True)
    assert r1_penalty(-0.5 * (at_centre - m).pow(2).sum(1), at_centre).item() == 0.0


def test_r1_keeps_the_graph_for_the_critic_weights():
    """For a linear critic f = w.y the penalty is ||w||^2, whose gradient in w is 2 w."""
    critic = nn.Linear(2, 1, bias=True).double()
    y = data().requires_grad_(True)
    value = r1_penalty(critic(y).squeeze(-1), y)
    torch.testing.assert_close(value, critic.weight.pow(2).sum())
    value.backward()
    torch.testing.assert_close(critic.weight.grad, 2 * critic.weight.detach())
    assert critic.bias.grad is None or float(critic.bias.grad.abs()) == 0.0


def gan(r1_weight, **objective):
    return build(preset="gan", data=data().float(), flow={"network": SMALL},
                 objective={"r1_weight": r1_weight, **objective}, smoother={"network": SMALL, "latent_dim": 4},
                 train={"progress": False, "ema": 0.0}).double()


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
def test_objective_adds_half_gamma_times_r1(updates):
    """discriminator_loss(r1_weight = gamma) - discriminator_loss(0) = gamma / 2 * E||grad f(real)||^2, checked
    against autograd on the discriminator network itself; the interpolate penalty is untouched."""
    model = gan(0.7, updates=updates, gp_weight=0.3)
    objective, flow = model.objective, model.flow
    real, fake = data(64, seed=1), data(64, seed=2) - 1.5
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731  (same interpolates in both losses)
    with_r1 = objective.discriminator_loss(real, fake, g())
    without = attrs.evolve(objective.critic, r1_weight=0.0)(flow, real, fake, None, g())
    y = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(flow.logit(y, None).sum(), y)
    expected = 0.35 * grad.pow(2).sum(1).mean()
    assert float(expected) > 1e-6
    torch.testing.assert_close(with_r1 - without, expected)


def test_r1_flattens_the_discriminator_at_the_data():
    """Trained against a fixed far-off generator, a discriminator with R1 has a smaller gradient at the data
    than one without (same seed, same steps): the penalty acts where it should."""
    norms = []
    for weight in (0.0, 10.0):
        model = gan(weight)
        torch.manual_seed(0)
        d_player, _ = model.objective.players(model)
        opt = torch.optim.Adam(d_player.parameters, lr=1e-2)
        real = data(256, seed=3)
        fake = real - 3.0
        for _ in range(100):
            opt.zero_grad()
            model.objective.discriminator_loss(real, fake, None).backward()
            opt.step()
        y = real.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.flow.logit(y, None).sum(), y)
        norms.append(float(grad.pow(2).sum(1).mean()))
    assert norms[1] < 0.2 * norms[0]


@pytest.mark.parametrize("value", [-0.1, "1", True])
def test_bad_r1_weight_is_named(value):
    with pytest.raises(ConfigError, match="r1_weight"):
        gan(value)
