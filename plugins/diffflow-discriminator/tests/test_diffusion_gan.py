"""DiffFlow's Diffusion-GAN and TDPM rows (SPEC §1.2, §1.4) with learned parts: drift assembly and schedules."""
import pytest
import torch
from torch import nn

from diffflow_core.build import build
from diffflow_core.errors import ConfigError
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
