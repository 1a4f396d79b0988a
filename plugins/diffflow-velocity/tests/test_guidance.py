"""Classifier-free guidance (SPEC §4.4, §4.5.5) and the sampling context."""
import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import SamplingContext
from diffflow_core.model import Model
from diffflow_velocity.flow import VelocityFlow


@pytest.fixture
def flow():
    torch.manual_seed(0)
    return VelocityFlow(network={"name": "mlp", "hidden": 32, "depth": 2}, event_shape=(2,), conditional=True,
                        num_classes=3).double()


def inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(50, 2, generator=gen, dtype=torch.float64), torch.rand(50, generator=gen, dtype=torch.float64)


def test_guidance_reproduces_conditional_and_unconditional_fields_and_is_linear(flow):
    x, t = inputs()
    y = torch.full((50,), 2)
    cond, uncond = flow.field(x, t, y), flow.field(x, t)
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(flow.guided_field(x, t, y, 1.0), cond, atol=1e-12)
    assert torch.allclose(flow.guided_field(x, t, y, 0.0), uncond, atol=1e-12)
    for w in (-1.0, 0.5, 2.0, 4.5):
        assert torch.allclose(flow.guided_field(x, t, y, w), uncond + w * (cond - uncond), atol=1e-12)


def context(flow, **options):
    return SamplingContext(options=flow.check_sampling_options(options))


def test_sampling_context_applies_label_and_guidance_and_the_flow_keeps_none(flow):
    x, t = inputs()
    guided = flow.drift(x, t, context(flow, label=1, guidance=2.0))
    assert torch.allclose(guided, flow.guided_field(x, t, torch.full((50,), 1), 2.0))
    assert torch.allclose(flow.evaluate_drift(x, t), flow.field(x, t))  # no context: unconditional
    per_particle = torch.arange(50) % 3
    assert torch.allclose(flow.drift(x, t, context(flow, label=per_particle)), flow.field(x, t, per_particle))
    with pytest.raises(ConfigError, match=r"label: expected one label per particle, shape \(10,\)"):
        flow.drift(x[:10], t[:10], context(flow, label=per_particle))


def test_model_sample_passes_label_and_guidance(flow):
    model = Model(flow)
    a = model.sample(20, 4, seed=0, label=1, guidance=2.0)
    b = model.sample(20, 4, seed=0, label=1, guidance=0.0)
    c = model.sample(20, 4, seed=0)
    assert a.nfe == 4 and not torch.allclose(a.x, b.x)
    assert torch.allclose(b.x, c.x)  # w = 0 is the unconditional model


@pytest.mark.parametrize("options,field", [({"label": 3}, "label"), ({"label": -1}, "label"),
                                           ({"label": 1.5}, "label"), ({"guidance": 2.0}, "guidance"),
                                           ({"label": 0, "guidance": float("nan")}, "guidance")])
def test_bad_sampling_options_are_rejected(flow, options, field):
    with pytest.raises(ConfigError, match=field):
        flow.check_sampling_options(options)
    with pytest.raises(ConfigError, match="flow VelocityFlow accepts .*label, guidance.*got \\['steps'\\]"):
        flow.check_sampling_options({"steps": 3})


def test_unconditional_flow_rejects_labels():
    flow = VelocityFlow(network={"name": "mlp", "hidden": 8, "depth": 1}, event_shape=(2,))
    with pytest.raises(ConfigError, match="unconditional"):
        flow.check_sampling_options({"label": 0})
    with pytest.raises(ConfigError, match="num_classes"):
        VelocityFlow(event_shape=(2,), conditional=True)
