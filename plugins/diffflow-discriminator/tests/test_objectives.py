"""The ``gan`` and ``discriminator-flow`` objectives: each refuses the other's smoother before any training, and
both train their discriminator with the one loss of eq 15 (``losses.DiscriminatorLoss``)."""
import pytest
import torch
from torch import nn

from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch
from diffflow_discriminator.flow import DiscriminatorFlow
from diffflow_discriminator.losses import LOSSES
from diffflow_discriminator.objectives import DiscriminatorFlowObjective, GanObjective

SMALL = {"name": "mlp", "hidden": 16, "depth": 2, "activation": "leaky_relu"}


def data(n=200, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) + 1


def assert_refused_before_training(model, match):
    """``fit`` raises a one-line ConfigError naming ``smoother`` and no weight has moved."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=match) as error:
        model.fit(steps=2)
    assert "\n" not in str(error.value) and str(error.value).startswith("smoother: ")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gan_refuses_the_identity_smoother_before_training():
    model = build(preset="gan", data=data(), flow={"network": SMALL}, smoother="identity",
                  train={"progress": False})
    assert_refused_before_training(model, "objective 'gan' .* got 'identity'; .* use objective 'discriminator-flow'")


def test_discriminator_flow_refuses_the_generator_smoother_before_training():
    model = build(preset="discriminator-flow", data=data(), flow={"network": SMALL},
                  smoother={"name": "generator", "latent_dim": 4, "network": SMALL}, train={"progress": False})
    assert_refused_before_training(model, "objective 'discriminator-flow' .* got 'generator'; .* use objective 'gan'")


def test_score_gan_refuses_the_identity_smoother_before_training_its_data_score():
    model = build(preset="score-gan", data=data(), smoother="identity", train={"progress": False},
                  flow={"network": SMALL, "data_network": SMALL, "data_steps": 3})
    assert_refused_before_training(model, "objective 'generated-dsm' .* got 'identity'")
    assert not model.flow.data_ready


def test_gan_with_flow_steps_points_to_discriminator_flow():
    """Configs from when ``gan`` also trained Discriminator Flows name ``flow_steps``: refused with the fix."""
    with pytest.raises(ConfigError, match="flow_steps: objective 'gan' .*objective 'discriminator-flow'"):
        build(preset="gan", data=data(), flow={"network": SMALL}, objective={"flow_steps": 56})


class Critic(nn.Module):
    """A smooth critic that accepts a time and ignores it: the same ``f`` with and without time conditioning."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x, t=None, y=None):
        return self.body(x)


def reference_loss(net, loss, real, fake, gp_weight, gp_center, r1_weight, generator):
    """Eq 15 negated plus the penalties, written out (SPEC §2.4, §2.8 step 4): the interpolates' alpha drawn
    first from ``generator``, as the gradient penalty draws it."""
    f_real, f_fake = net(real).squeeze(1), net(fake).squeeze(1)
    value = loss.b(f_fake).mean() - loss.a(f_real).mean()
    alpha = torch.rand(real.shape[0], 1, generator=generator, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x_hat).sum(), x_hat)
    value = value + gp_weight * (grad.norm(dim=1) - gp_center).pow(2).mean()
    y = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(y).sum(), y)
    return value + r1_weight / 2 * grad.pow(2).sum(1).mean()


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("seed", range(4))
def test_both_objectives_compute_the_same_discriminator_loss(loss, seed):
    """For the same discriminator, batch, particles and penalty draws, the GAN's and the Discriminator Flow's
    discriminator losses are equal (one shared loss), and equal to eq 15 negated plus the penalties written out;
    the settings are random per seed."""
    draw = torch.Generator().manual_seed(seed)
    gp_weight, gp_center, r1_weight = (float(v) for v in torch.rand(3, generator=draw) * torch.tensor([5, 1, 2]))
    net = Critic().double()
    real = torch.randn(32, 2, generator=draw, dtype=torch.float64) + 1
    fake = torch.randn(32, 2, generator=draw, dtype=torch.float64) * 2
    t = torch.randint(0, 8, (32,), generator=draw).double() / 8
    penalties = {"gp_weight": gp_weight, "gp_center": gp_center, "r1_weight": r1_weight}
    gan = GanObjective(DiscriminatorFlow(network=net, loss=loss, time_conditioned=False), **penalties)
    dflow = DiscriminatorFlowObjective(DiscriminatorFlow(network=net, loss=loss, time_conditioned=True),
                                       flow_steps=8, **penalties)
    from_gan = gan.discriminator_loss(real, fake, torch.Generator().manual_seed(seed))
    from_flow = dflow.critic(dflow.flow, real, fake, t, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(from_gan, from_flow, rtol=1e-12, atol=1e-12)
    expected = reference_loss(net, LOSSES[loss], real, fake, gp_weight, gp_center, r1_weight,
                              torch.Generator().manual_seed(seed))
    torch.testing.assert_close(from_gan, expected.detach(), rtol=1e-10, atol=1e-12)


def test_each_objectives_step_is_the_shared_loss_on_its_own_particles():
    """The discriminator player of ``gan`` is the shared loss at ``g(z)``; that of ``discriminator-flow`` the
    shared loss at Algorithm 3's ``(z_k, t = k/N)`` against the data smoothed at ``t`` (same draws, replayed)."""
    real = data(32, seed=1).double()
    gan = build(preset="gan", data=data(), flow={"network": SMALL, "loss": "wgan"}, objective={"gp_weight": 1.0},
                smoother={"network": SMALL, "latent_dim": 4}).double()
    d_player, _ = gan.objective.players(gan)
    replay = torch.Generator().manual_seed(3)
    fake = gan.smoother(gan.smoother.sample_latent(32, replay))
    torch.testing.assert_close(d_player.loss(Batch(real), torch.Generator().manual_seed(3)),
                               gan.objective.critic(gan.flow, real, fake, None, replay))

    dflow = build(preset="diffflow-gan", data=data(), flow={"network": SMALL}, objective={"flow_steps": 4,
                  "gp_weight": 1.0}).double()
    (d_player,) = dflow.objective.players(dflow)
    replay = torch.Generator().manual_seed(3)
    fake, t = dflow.objective.simulated_particles(32, replay, "cpu")
    smoothed = dflow.flow.smooth(real, t, replay)
    assert not torch.equal(smoothed, real)  # DiffFlow's GAN row: the data are smoothed by sigma(t)
    torch.testing.assert_close(d_player.loss(Batch(real), torch.Generator().manual_seed(3)),
                               dflow.objective.critic(dflow.flow, smoothed, fake, t, replay))


@pytest.mark.parametrize("field, value", [("gp_weight", -1.0), ("r1_weight", "1"), ("gp_center", True),
                                          ("d_steps", 0), ("flow_steps", 1.5), ("betas", (0.5, 1.0)),
                                          ("particles", "all")])
def test_bad_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}: ") as error:
        build(preset="discriminator-flow", data=data(), flow={"network": SMALL}, objective={field: value})
    assert "\n" not in str(error.value)
