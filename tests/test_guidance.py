"""Discriminator guidance (diffflow_discriminator.guidance): the exact correction closes the gap to the data's flow,
the trained discriminator learns the density ratio, and the product path and its refusals."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from diffflow_core import build
from diffflow_core.compose import ComposedFlow
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import SamplingContext
from diffflow_core.plugins import registry
from diffflow_core.testing import AnalyticNetwork
from diffflow_discriminator.guidance import GuidanceCorrection

TINY = {"name": "mlp", "hidden": 32, "depth": 2}
C_BASE, C_DATA = 0.7 ** 2, 1.3 ** 2  # the base samples N(0, C_BASE I), the data is N(0, C_DATA I)



def denoiser(c: float):
    """EDM's ``D(x; sigma) = E[y | y + sigma eps = x]`` for ``y ~ N(0, c I)``."""
    return lambda x, sigma: c * x / (c + sigma ** 2)


def log_normal(x: Tensor, var: Tensor) -> Tensor:
    return -0.5 * (x.pow(2) / var + torch.log(2 * math.pi * var)).sum(1, keepdim=True)


def exact_ratio(x: Tensor, noise_input: Tensor) -> Tensor:
    """``log q_sigma - log p_sigma`` for the two Gaussians; the network sees ``ln(sigma) / 4``."""
    sigma2 = torch.exp(8 * noise_input)
    return log_normal(x, C_DATA + sigma2) - log_normal(x, C_BASE + sigma2)


def edm(c: float):
    return registry("flows").create("score", parameterisation="edm", precondition=False,
                                    network=AnalyticNetwork(denoiser(c)), event_shape=(2,))


def test_exact_correction_turns_the_base_flow_into_the_data_flow():
    """(G1) with the optimal discriminator: ``v_base + c`` is the data's PF-ODE drift at every noise level."""
    correction = GuidanceCorrection(AnalyticNetwork(exact_ratio), event_shape=(2,))
    guided = ComposedFlow([{"flow": edm(C_BASE)}, {"flow": correction, "time": "noise"}])
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    for sigma in (0.05, 0.5, 3.0, 20.0):
        t = torch.tensor(sigma)
        torch.testing.assert_close(guided.evaluate_drift(x, t, SamplingContext()), edm(C_DATA).evaluate_drift(x, t),
                                   rtol=1e-4, atol=1e-5)
    assert torch.equal(correction.evaluate_drift(x, torch.tensor(0.0)), torch.zeros_like(x))


def rectified(c: float):
    """The exact rectified-flow velocity of ``N(0, c I)`` (x_t = t y + (1 - t) eps), through EDM's denoiser."""
    field = AnalyticNetwork(lambda x, t: (denoiser(c)(x / t, (1 - t) / t) - x) / (1 - t))
    return registry("flows").create("velocity", network=field, event_shape=(2,))


def test_exact_correction_mapped_onto_a_rectified_flow_clock():
    """The correction lives on EDM's axis; (C1) maps it onto a rectified flow's t, where it again closes the gap."""
    correction = GuidanceCorrection(AnalyticNetwork(exact_ratio), event_shape=(2,))
    guided = ComposedFlow([{"flow": rectified(C_BASE)}, {"flow": correction, "time": "noise"}])
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    for t in (0.1, 0.5, 0.9):
        t = torch.tensor(t)
        drift = guided.term_drift(0, x, t) + guided.term_drift(1, x, t, affine=False)  # as the guided flow adds it
        torch.testing.assert_close(drift, rectified(C_DATA).evaluate_drift(x, t), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(guided.term_drift(1, x, t), guided.term_drift(1, x, t, affine=False))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An EDM trained for a few steps on ring5, saved: the guided model only sees its checkpoint."""
    model = build(preset="edm", data="ring5", flow={"network": TINY}, sample={"steps": 3},
                  train={"steps": 30, "progress": False})
    model.fit()
    path = tmp_path_factory.mktemp("guidance") / "base.pt"
    model.save(str(path))
    return str(path)


def guided(base: str, steps: int = 200, **flow):
    return build({"flow": {"name": "discriminator-guidance", "base": base, "network": TINY, **flow},
                  "objective": {"name": "discriminator-guidance", "samples": 1024}, "solver": "heun",
                  "data": "ring5", "sample": {"steps": 3},
                  "train": {"steps": steps, "batch_size": 256, "lr": 3e-3, "progress": False}})


def test_the_discriminator_separates_data_from_base_samples_and_guidance_moves_samples(base):
    model = guided(base)
    model.fit()
    objective, flow = model.objective, model.flow
    low, high = flow.noise_range()
    real = model.data.train[:1024]
    sigma = torch.full((1024,), low)
    with torch.no_grad():
        margin = flow.correction.logit(real, sigma).mean() - flow.correction.logit(objective.fakes, sigma).mean()
    assert margin > 0.5  # d ~ log q - log p: larger on the data than on the base's samples
    plain = model.sample(256, seed=0, guidance=0.0).x
    pushed = model.sample(256, seed=0, guidance=2.0).x
    assert torch.isfinite(pushed).all() and not torch.allclose(plain, pushed)


def test_guidance_zero_is_the_base_sampler(base):
    from diffflow_core.model import Model

    model = guided(base, steps=1)
    model.fit()
    torch.testing.assert_close(model.sample(128, seed=3, guidance=0.0).x, Model.load(base).sample(128, seed=3).x)


@pytest.mark.parametrize("path, flow, message", [
    (None, {}, "base: expected the path"),
    ("base", {"weight": "strong"}, "weight: expected a finite number"),
])
def test_refusals_are_one_line(base, path, flow, message):
    with pytest.raises(ConfigError, match=message) as info:
        guided(base if path == "base" else path, **flow)
    assert "\n" not in str(info.value)


def test_a_generator_base_is_refused(tmp_path):
    path = str(tmp_path / "gan.pt")
    build(preset="gan", data="ring5").save(path)
    with pytest.raises(ConfigError, match="samples through its"):
        guided(path)


def test_guidance_option_is_checked(base):
    model = guided(base, steps=1)
    with pytest.raises(ConfigError, match="guidance"):
        model.sample(8, seed=0, guidance="x")
