"""Translation between classes through a shared latent (SPEC §4.3, §4.5.4) and the difference form."""
import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_velocity.translate import translate

MEANS = torch.tensor([[2.0, 0.0], [-1.0, 1.5]], dtype=torch.float64)


@pytest.fixture
def two_class_flow(gaussian_flow, spd):
    covs = torch.stack([spd(2, 0), spd(2, 1)])
    return gaussian_flow(MEANS, covs), covs


def test_translation_maps_class_law_to_class_law(two_class_flow, affine):
    flow, covs = two_class_flow
    m, b = affine(lambda x: translate(x, 0, 1, flow=flow, steps=400).x, 2)
    # pushforward of N(m_0, S_0) by x -> M x + b
    assert torch.allclose(m @ covs[0] @ m.T, covs[1], atol=1e-5)
    assert torch.allclose(m @ MEANS[0] + b, MEANS[1], atol=1e-5)


def test_cycle_returns_the_input_up_to_ode_error(two_class_flow):
    flow, _ = two_class_flow
    x = MEANS[0] + torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for steps in (10, 20, 40):
        there = translate(x, 0, 1, flow=flow, steps=steps)
        back = translate(there.x, 1, 0, flow=flow, steps=steps)
        assert there.nfe == 2 * 2 * steps  # two Heun legs
        errors.append(float((back.x - x).norm(dim=1).max()))
    assert errors[-1] < 1e-3
    assert errors[0] / errors[1] > 3 and errors[1] / errors[2] > 3  # second order: ~4x per halving


def test_guided_translation_uses_guided_fields_and_stays_cyclic(two_class_flow):
    flow, _ = two_class_flow
    x = MEANS[0] + torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plain, guided = translate(x, 0, 1, flow=flow, steps=40), translate(x, 0, 1, flow=flow, steps=40, guidance=2.0)
    assert not torch.allclose(plain.x, guided.x, atol=1e-3)  # the null label (class 0 here) pushes away
    back = translate(guided.x, 1, 0, flow=flow, steps=40, guidance=2.0)
    assert float((back.x - x).norm(dim=1).max()) < 3e-3  # guided fields are stiffer: a larger ODE error


def test_difference_form_shifts_means_by_its_documented_integral(gaussian_flow):
    """Equal identity covariances: the difference field is (m2 - m1)(1 - t) / Sigma_t with Sigma_t scalar."""
    flow = gaussian_flow(MEANS, torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone())
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = translate(x, 0, 1, flow=flow, steps=200, method="difference")
    integral = torch.pi / 4  # int_0^1 (1 - t) / ((1 - t)^2 + t^2) dt
    assert out.latent is None
    assert torch.allclose(out.x - x, (MEANS[1] - MEANS[0]) * integral, atol=1e-6)
    assert not torch.allclose(out.x - x, MEANS[1] - MEANS[0], atol=0.1)  # the caveat: not the true shift


def test_bad_translation_requests(two_class_flow):
    flow, _ = two_class_flow
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ConfigError, match="method"):
        translate(x, 0, 1, flow=flow, method="magic")
    with pytest.raises(ConfigError, match="target"):
        translate(x, 0, 5, flow=flow)
    with pytest.raises(ConfigError, match="flow"):
        translate(x, 0, 1)
    with pytest.raises(ConfigError, match="guidance"):
        translate(x, 0, 1, flow=flow, guidance=float("inf"))
